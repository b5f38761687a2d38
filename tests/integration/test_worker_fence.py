"""The worker agents' per-partition fence (``runtime.fence``), in-process on the real broker.

* A new owner's ``acquire`` fences the former writer of that state partition: the
  former one's next checkpoint raises ``PartitionLost``, nothing it wrote after the
  takeover is committed, and a committed reader sees the new owner's records only.
* A partition's writer does not fence another partition's.
* A transaction the former owner left open (paused mid-checkpoint) is aborted by the
  new owner's ``acquire``: readers never see it and are not blocked by it.
* Real workers: one SIGSTOPped past its session while samples flow, the other takes
  over; once resumed the stalled one commits nothing for the partitions it lost, and
  the aggregates match the no-fault oracle.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
from datetime import datetime
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fixtures.dataset import generate, oracle

from integration.test_pipeline_e2e import (
    check_against_oracle,
    in_group,
    produce_in_background,
    recent_start,
)
from monitoring.config import Settings
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.runtime import topics
from monitoring.runtime.changelog import read_table
from monitoring.runtime.fence import OWNER_HEADER, PartitionFence, PartitionLost
from monitoring.runtime.outputs import consumer_config

pytestmark = pytest.mark.integration


def committed_records(settings: Settings, topic: str, partition: int) -> list[tuple[Any, ...]]:
    """(key, value, x-owner, timestamp ms) of every committed record of ``topic[partition]``."""
    k = settings.kafka
    c = Consumer(
        consumer_config(
            k, "fence-test-reader", **{"isolation.level": "read_committed",
                                       "enable.partition.eof": True}
        )
    )  # fmt: skip
    out: list[tuple[Any, ...]] = []
    try:
        c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        while True:
            m = c.poll(30)
            assert m is not None, "no end of partition in 30 s"
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return out
                raise AssertionError(str(err))
            owner = dict(m.headers() or []).get(OWNER_HEADER)
            out.append((m.key(), m.value(), owner, m.timestamp()[1]))
    finally:
        c.close()


def test_a_new_owner_fences_the_former_writer(kafka_settings: Settings) -> None:
    k = kafka_settings.kafka
    state = topics.topic_name(k, topics.AGGREGATION_STATE)
    a = PartitionFence(k, state, "worker-a")
    b = PartitionFence(k, state, "worker-b")

    async def run() -> None:
        a.acquire(0)
        a.acquire(1)
        assert await a.write(0, [(b"x", b"a1"), (b"y", b"a1")])
        assert await a.write(1, [(b"x", b"a1")])
        b.acquire(0)  # b takes partition 0 over; a still believes it owns it
        with pytest.raises(PartitionLost):
            await a.write(0, [(b"x", b"a2"), (b"z", b"a2")])
        assert 0 not in a.partitions  # its producer is gone; 1 is still a's
        with pytest.raises(PartitionLost):  # and stays refused
            await a.write(0, [(b"x", b"a3")])
        assert await a.write(1, [(b"x", b"a2")])  # partition 1 is a's alone
        assert await b.write(0, [(b"y", b"b1")])

    asyncio.run(run())
    assert read_table(k, state, 0) == {b"x": b"a1", b"y": b"b1"}
    assert read_table(k, state, 1) == {b"x": b"a2"}
    owners = [(key, owner) for key, _, owner, _ in committed_records(kafka_settings, state, 0)]
    assert owners == [(b"x", b"worker-a/1"), (b"y", b"worker-a/1"), (b"y", b"worker-b/1")]
    b.release_all()
    a.release_all()


def test_a_transaction_left_open_is_aborted_by_the_next_owner(kafka_settings: Settings) -> None:
    k = kafka_settings.kafka
    state = topics.topic_name(k, topics.AGGREGATION_STATE)
    a = PartitionFence(k, state, "worker-a")
    a.acquire(2)
    # a pauses in the middle of a checkpoint: records produced, no commit
    producer = a._writers[2].producer
    producer.begin_transaction()
    producer.produce(state, b"stale", b"x", 2, headers=[(OWNER_HEADER, b"worker-a")])
    assert producer.flush(10) == 0  # on the broker, uncommitted
    b = PartitionFence(k, state, "worker-b")
    b.acquire(2)  # aborts a's transaction
    assert asyncio.run(b.write(2, [(b"k", b"b1")]))
    assert read_table(k, state, 2, timeout_s=30) == {b"k": b"b1"}
    assert [r[2] for r in committed_records(kafka_settings, state, 2)] == [b"worker-b/1"]
    b.release_all()


# -- real worker processes ------------------------------------------------------------


def log_events(p: Pipeline, name: str, event: str) -> list[dict[str, Any]]:
    """The JSON log records of process ``name`` with event ``event`` (flat objects:
    found anywhere in a line, as a terminal escape or another process's write may
    share it)."""
    path = p.dir / f"{name}.log"
    text = path.read_text(errors="replace") if path.exists() else ""
    out = []
    for found in re.findall(r'\{[^{}]*"event": "' + re.escape(event) + r'"[^{}]*\}', text):
        try:
            out.append(json.loads(found))
        except ValueError:
            continue
    return out


def acquires(p: Pipeline, names: list[str], topic: str, partition: int) -> list[tuple[float, str]]:
    """(epoch ms, owner) of every acquire of ``topic[partition]`` by the processes
    ``names`` (``partition_fenced_for_us``, logged once ``init_transactions`` returned),
    in time order."""
    out = []
    for name in names:
        for r in log_events(p, name, "partition_fenced_for_us"):
            if r["topic"] == topic and r["partition"] == partition:
                at = datetime.fromisoformat(r["timestamp"].replace("Z", "+00:00"))
                out.append((at.timestamp() * 1000, r["owner"]))
    return sorted(out)


def not_the_owners(
    records: list[tuple[Any, ...]], terms: list[tuple[float, str]]
) -> list[tuple[Any, ...]]:
    """Committed records not written by the writer that had acquired the partition last
    before the record was produced (its timestamp): a record an earlier writer produced
    after a later one's acquire is one the fence should have refused. A record is
    produced before its transaction commits, which is before any later acquire returns."""
    wrong = []
    for key, _, owner, ts in records:
        current = [o for at, o in terms if at <= ts]
        if not current or owner is None or owner.decode() != current[-1]:
            wrong.append((key, owner, ts, current[-1:]))
    return wrong


@pytest.mark.slow
def test_a_stalled_worker_is_fenced_from_the_partitions_it_lost(pipeline: Pipeline) -> None:
    """Two workers; worker-a is SIGSTOPped past its session while samples flow;
    worker-b takes its partitions over and restores them; worker-a resumes. Every
    committed state record was written by the worker that had acquired its partition
    last (none of worker-a's after worker-b's takeover), worker-a's stale checkpoint
    is refused (fenced), and the aggregates match the oracle."""
    points = generate(n_series=200, ticks=400, start_ms=recent_start(400), seed=17)
    expected = oracle(points, pipeline.settings.aggregation.windows_ms)
    n = pipeline.settings.kafka.samples_partitions
    state = pipeline.topic(topics.AGGREGATION_STATE)
    pipeline.start_store()
    a = pipeline.start("worker", "worker-a")
    in_group(pipeline, "worker-a")
    pipeline.start("worker", "worker-b")
    in_group(pipeline, "worker-b")
    producer = produce_in_background(pipeline, points)

    def acquired_by_b() -> set[int]:
        return {
            r["partition"]
            for r in log_events(pipeline, "worker-b", "partition_fenced_for_us")[known:]
            if r["topic"] == state
        }

    known = len(log_events(pipeline, "worker-b", "partition_fenced_for_us"))
    a.send_signal(signal.SIGSTOP)
    try:
        pipeline.wait(
            lambda: acquired_by_b() == set(range(n)),
            120,
            f"worker-b acquiring every partition\n{pipeline.logs()}",
        )
        restored = len(log_events(pipeline, "worker-b", "partition_restored"))
        assert restored >= n
    finally:
        a.send_signal(signal.SIGCONT)
    pipeline.wait(
        lambda: any(
            r["topic"] == state for r in log_events(pipeline, "worker-a", "partition_lost_fenced")
        ),
        120,
        f"worker-a's stale checkpoint fenced\n{pipeline.logs()}",
    )
    producer.join(300)
    check_against_oracle(pipeline, expected)
    for part in range(n):
        records = committed_records(pipeline.settings, state, part)
        terms = acquires(pipeline, ["worker-a", "worker-b"], state, part)
        assert records and len({r[2] for r in records}) >= 2, part  # both wrote it in turn
        assert not_the_owners(records, terms) == [], (part, terms)
    lost = log_events(pipeline, "worker-a", "partition_lost_fenced")
    print(f"worker-a fenced on {len(lost)} partition(s) of its agents after SIGCONT")
