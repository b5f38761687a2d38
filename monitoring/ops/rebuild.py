"""State rebuild of a stream agent (aggregation, anomaly, logs, model_metrics).

An agent's state lives in the worker's memory and in its compacted changelog topic
(``<prefix><agent>.state``), nothing on local disk: every partition assignment restores
it from the changelog (``runtime.partition_state``). So:

* ``check_changelog`` (``monitoring state rebuild <agent>``) rebuilds each partition
  offline exactly as a worker would (``Shadow.load`` then the agent's ``restore``) and
  reports what it holds, whether it reads, and its applied offset against the worker
  group's committed offset. Making running workers rebuild needs no tool: restart one
  worker process (the others keep running; the group rebalances and every partition's
  new owner restores it from the changelog).
* ``rebuild_from_source`` (``--from-source --from T [--to T]``), for a changelog that is
  lost, deleted or unreadable: replays each source partition from the first record at
  or after ``--from`` up to the worker group's committed offset (or ``--to``'s offset,
  if earlier) through a fresh agent on the runtime's own ``AgentDriver`` (the pure
  domain code the worker runs), discarding its outputs (they were published the first
  time), and writes the state it ends with as the partition's changelog: the old keys
  tombstoned, the new records, the commit record last. With ``--to`` before the
  committed offsets the group's offsets are moved back to it, so the worker replays
  the rest and publishes it again (replays are idempotent: identical windows, cumulative
  counters, keyed rows).

The worker group must be empty while the changelog is written (its members own the
partitions and would overwrite it): stop the ``monitoring worker`` processes of that
deployment first. The store, the alert evaluator, the notifier and producers keep
running; records produced meanwhile wait in the topics.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.runtime.admin import admin_client
from monitoring.runtime.agent import StreamAgent
from monitoring.runtime.changelog import read_table
from monitoring.runtime.driver import AgentDriver
from monitoring.runtime.fence import PartitionFence, PartitionLost, transactional_id
from monitoring.runtime.kafka_client import authorization_problem
from monitoring.runtime.memory import MemoryMessage, MemorySink
from monitoring.runtime.outputs import OutputsLost, consumer_config
from monitoring.runtime.shadow import COMMIT_KEY, Shadow

AGENTS = {
    "aggregation": "monitoring.agents.aggregation:AggregationAgent",
    "anomaly": "monitoring.agents.anomaly:AnomalyAgent",
    "logs": "monitoring.agents.logs:LogAgent",
    "model_metrics": "monitoring.agents.model_metrics:ModelMetricsAgent",
}
CHECKPOINT_EVERY = 20_000  # messages between checkpoints of the replay (bounds memory)
log = get_logger("rebuild")


class RebuildError(RuntimeError):
    """A rebuild that must not or cannot go on (the reason is the message)."""


def make_agent(name: str, settings: Settings, registry: CollectorRegistry) -> StreamAgent[Any]:
    """A fresh agent by name (``AGENTS``)."""
    if name not in AGENTS:
        raise RebuildError(f"unknown agent {name!r}: one of {', '.join(AGENTS)}")
    module, cls = AGENTS[name].split(":")
    agent: StreamAgent[Any] = getattr(importlib.import_module(module), cls)(settings, registry)
    return agent


def worker_group(settings: Settings) -> str:
    """The worker's consumer group (``runtime.app.create_app``'s app id)."""
    return f"{settings.kafka.topic_prefix}worker"


@dataclass
class PartitionReport:
    """One partition of an agent's state as a restore reads it."""

    partition: int
    records: int  # physical records (both slots, the commit record)
    keys: int  # committed logical keys
    readable: bool
    error: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # the agent's health fields
    committed: dict[str, int] = field(default_factory=dict)  # source topic -> group offset

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return dict(self.__dict__)


def _partitions(consumer: Any, topic: str, timeout_s: float) -> list[int]:
    md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
    if md is None or md.error is not None:
        raise RebuildError(f"topic {topic!r} is not there: {md.error if md else 'missing'}")
    return sorted(md.partitions)


def _probe(settings: Settings) -> Consumer:
    """A consumer that never joins a group or commits (metadata, offsets)."""
    group = f"{settings.kafka.topic_prefix}rebuild-{uuid.uuid4().hex[:8]}"
    return Consumer(consumer_config(settings.kafka, group, **{"enable.partition.eof": True}))


def committed_offsets(
    settings: Settings, topics: Sequence[str], partitions: Sequence[int], timeout_s: float
) -> dict[tuple[str, int], int]:
    """The worker group's committed offsets (partitions without one left out)."""
    c = Consumer(consumer_config(settings.kafka, worker_group(settings)))  # never subscribes
    try:
        tps = [TopicPartition(t, p) for t in topics for p in partitions]
        got = c.committed(tps, timeout=timeout_s)
        return {(tp.topic, tp.partition): tp.offset for tp in got if tp.offset >= 0}
    finally:
        c.close()


def check_changelog(
    settings: Settings, agent_name: str, timeout_s: float = 60.0
) -> list[PartitionReport]:
    """Each partition of the agent's changelog restored as a worker restores it."""
    registry = CollectorRegistry()
    agent = make_agent(agent_name, settings, registry)
    probe = _probe(settings)
    try:
        parts = _partitions(probe, agent.state_topic, timeout_s)
    finally:
        probe.close()
    committed = committed_offsets(settings, agent.sources, parts, timeout_s)
    out = []
    for p in parts:
        physical = read_table(settings.kafka, agent.state_topic, p, timeout_s)
        report = PartitionReport(p, len(physical), 0, True)
        report.committed = {t: o for (t, q), o in committed.items() if q == p}
        try:
            _, table = Shadow.load(physical)
            state = agent.restore(p, table)
            report.keys = len(table)
            report.summary = agent.health({p: state})
            agent.release(p, state)  # one partition at a time (a worker-wide budget)
        except Exception as e:  # what the worker would log and start afresh on
            report.readable = False
            report.error = repr(e)[:300]
        out.append(report)
    return out


def group_members(settings: Settings, timeout_s: float = 15.0) -> int:
    """Members of the worker group now (0: nobody owns the partitions)."""
    group = worker_group(settings)
    admin = admin_client(settings.kafka)
    futures = admin.describe_consumer_groups([group], request_timeout=timeout_s)
    desc = futures[group].result(timeout=timeout_s)
    return len(desc.members)


class _StateSink(MemorySink):
    """State records into tables; everything else counted and dropped (the outputs of
    the first run were published then)."""

    def __init__(self, state_topic: str) -> None:
        super().__init__(state_topic, {})
        self.discarded: dict[str, int] = {}

    def deliver(self, n: int) -> None:
        super().deliver(n)  # state records into the tables
        for r in self.delivered:
            if r.topic != self.state_topic or r.partition is None:
                self.discarded[r.topic] = self.discarded.get(r.topic, 0) + 1
        self.delivered.clear()  # nothing else is kept


@dataclass
class RebuildResult:
    """What a rebuild from source read and wrote."""

    agent: str
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # "topic[p]" -> [s, e)
    messages: int = 0
    keys: dict[int, int] = field(default_factory=dict)  # partition -> logical keys written
    tombstoned: dict[int, int] = field(default_factory=dict)
    discarded_outputs: dict[str, int] = field(default_factory=dict)
    rewound: dict[str, int] = field(default_factory=dict)  # "topic[p]" -> new group offset
    written: bool = False
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**self.__dict__, "ranges": {k: list(v) for k, v in self.ranges.items()}}


def _offsets_at(
    consumer: Any, tps: Sequence[tuple[str, int]], ts_ms: int, timeout_s: float
) -> dict[tuple[str, int], int]:
    """Per partition, the first offset at or after ``ts_ms`` (the high watermark if none)."""
    query = [TopicPartition(t, p, ts_ms) for t, p in tps]
    out = {}
    for tp in consumer.offsets_for_times(query, timeout=timeout_s):
        if tp.error is not None:
            raise RebuildError(f"offsets_for_times {tp.topic}[{tp.partition}]: {tp.error}")
        if tp.offset < 0:
            high = consumer.get_watermark_offsets(
                TopicPartition(tp.topic, tp.partition), timeout=timeout_s
            )[1]
            out[(tp.topic, tp.partition)] = high
        else:
            out[(tp.topic, tp.partition)] = tp.offset
    return out


def _read_range(consumer: Any, topic: str, p: int, start: int, end: int, timeout_s: float) -> Any:
    """The messages of ``topic[p]`` in ``[start, end)``, in runs, as the runtime's
    message type (timestamp in seconds, as Faust gives it)."""
    consumer.assign([TopicPartition(topic, p, start)])
    position, deadline = start, time.monotonic() + timeout_s
    try:
        while position < end:
            if time.monotonic() > deadline:
                raise RebuildError(f"{topic}[{p}]: stuck at offset {position} < {end}")
            run = []
            for m in consumer.consume(5000, timeout=0.5):
                if m.error() is not None:
                    continue  # partition EOF
                if m.offset() >= end:
                    position = end
                    break
                position = m.offset() + 1
                _, ts = m.timestamp()
                run.append(
                    MemoryMessage(
                        topic, p, m.offset(), m.key(), m.value(), ts / 1000, list(m.headers() or [])
                    )
                )
            if run:
                yield run
    finally:
        consumer.unassign()


def rebuild_from_source(
    settings: Settings,
    agent_name: str,
    from_ms: int,
    to_ms: int | None = None,
    dry_run: bool = False,
    timeout_s: float = 3600.0,
    members: Callable[[], int] | None = None,
) -> RebuildResult:
    """Rebuild the agent's changelog from its sources (module docstring); ``dry_run``
    replays and reports without writing anything."""
    started = time.monotonic()
    members = members or (lambda: group_members(settings))
    if not dry_run and members():
        raise RebuildError(
            f"the worker group {worker_group(settings)!r} has members: stop the "
            "`monitoring worker` processes of this deployment first (the others may run)"
        )
    registry = CollectorRegistry()
    agent = make_agent(agent_name, settings, registry)
    sink = _StateSink(agent.state_topic)
    driver: AgentDriver[Any] = AgentDriver(
        agent,
        sink,
        dead_letter_topic="",
        read_state=lambda topic, p: {},  # a fresh start
        end_offsets=lambda topic, parts: None,
        registry=registry,
    )
    result = RebuildResult(agent_name)
    probe = _probe(settings)
    try:
        parts = _partitions(probe, agent.sources[0], 30)
        tps = [(t, p) for t in agent.sources for p in parts]
        committed = committed_offsets(settings, agent.sources, parts, 30)
        starts = _offsets_at(probe, tps, from_ms, 30)
        ends = {
            tp: committed[tp]
            if tp in committed
            else probe.get_watermark_offsets(TopicPartition(*tp), timeout=30)[1]
            for tp in tps
        }
        if to_ms is not None:
            at_to = _offsets_at(probe, tps, to_ms, 30)
            ends = {tp: min(ends[tp], at_to[tp]) for tp in tps}
        asyncio.run(_replay(driver, probe, parts, agent.sources, starts, ends, result, timeout_s))
    finally:
        probe.close()
    result.discarded_outputs = dict(sink.discarded)
    for p in parts:
        _, table = Shadow.load(sink.tables.get(p, {}))
        result.keys[p] = len(table)
    if dry_run:
        result.elapsed_s = time.monotonic() - started
        return result
    if members():  # a worker started meanwhile
        raise RebuildError("a worker joined the group during the rebuild: nothing written")
    _write(settings, agent.state_topic, parts, sink.tables, result)
    back = {tp: e for tp, e in ends.items() if tp in committed and e < committed[tp]}
    if back:
        _rewind(settings, back)
        result.rewound = {f"{t}[{p}]": o for (t, p), o in back.items()}
    result.written = True
    result.elapsed_s = time.monotonic() - started
    log.info("state_rebuilt", **{k: v for k, v in result.as_dict().items() if k != "ranges"})
    return result


async def _replay(
    driver: AgentDriver[Any],
    consumer: Any,
    parts: Sequence[int],
    sources: Sequence[str],
    starts: dict[tuple[str, int], int],
    ends: dict[tuple[str, int], int],
    result: RebuildResult,
    timeout_s: float,
) -> None:
    """Each partition's range through the driver; several sources of a partition are
    merged by record timestamp (the order the worker saw them in is not recorded)."""
    since = 0
    for p in parts:
        await driver.assigned([p])
        runs: list[MemoryMessage] = []
        for t in sources:
            s, e = starts[(t, p)], ends[(t, p)]
            result.ranges[f"{t}[{p}]"] = (s, max(s, e))
            if e <= s:
                continue
            for run in _read_range(consumer, t, p, s, e, timeout_s):
                if len(sources) == 1:
                    await driver.process(run)
                    result.messages += len(run)
                    since += len(run)
                    if since >= CHECKPOINT_EVERY:
                        await driver.checkpoint(force=True, ack=False)
                        since = 0
                else:
                    runs.extend(run)
        if runs:
            runs.sort(key=lambda m: (m.timestamp, m.topic, m.offset))
            for i in range(0, len(runs), 2000):
                await driver.process(runs[i : i + 2000])
            result.messages += len(runs)
        await driver.checkpoint(force=True, ack=False)


def _write(
    settings: Settings,
    topic: str,
    parts: Sequence[int],
    tables: dict[int, dict[bytes, bytes]],
    result: RebuildResult,
) -> None:
    """Replace each partition's changelog: old keys tombstoned, new records, the commit
    record last, in one transaction of the partition's fenced writer (``runtime.fence``:
    a stalled former worker can write nothing after it); raises if it did not commit."""
    k = settings.kafka
    fence = PartitionFence(k, topic, f"rebuild/{uuid.uuid4().hex[:8]}", timeout_s=60)
    try:
        for p in parts:
            try:
                fence.acquire(p)  # before reading: every former writer of p fenced
            except OutputsLost as e:
                cause = e.__cause__
                err = cause.args[0] if isinstance(cause, KafkaException) and cause.args else None
                denied = isinstance(err, KafkaError) and authorization_problem(
                    k, err, "Write", transactional_id(topic, p)
                )
                raise RebuildError(denied or f"fencing the writers of {topic}[{p}]: {e}") from None
            old = read_table(k, topic, p)
            new = tables.get(p, {})
            gone = [key for key in old if key not in new]
            records: list[tuple[bytes, bytes | None]] = [(key, None) for key in gone]
            records += [(key, value) for key, value in new.items() if key != COMMIT_KEY]
            if COMMIT_KEY in new:
                records.append((COMMIT_KEY, new[COMMIT_KEY]))
            try:
                written = asyncio.run(fence.write(p, records))
            except (PartitionLost, OutputsLost) as e:
                written, reason = False, str(e)
            else:
                reason = "the broker did not commit in time"
            if not written:
                raise RebuildError(
                    f"the broker did not take the rebuilt state of partition {p} ({reason}): "
                    "run the rebuild again before starting the workers"
                )
            result.tombstoned[p] = len(gone)
    finally:
        fence.release_all()


def _rewind(settings: Settings, offsets: dict[tuple[str, int], int]) -> None:
    """Move the (empty) worker group's committed offsets back to ``offsets``."""
    admin = admin_client(settings.kafka)
    tps = [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())]
    group = ConsumerGroupTopicPartitions(worker_group(settings), tps)
    for f in admin.alter_consumer_group_offsets([group]).values():
        f.result(timeout=30)
