"""The runtime in memory, for agent tests: partitions as lists, a manual clock, crashes.

``MemoryRuntime`` runs the same ``AgentDriver`` the worker runs, on in-memory source
partitions, a compacted state table per partition and a sink that delivers records
only when flushed (as the broker acknowledges them). ``crash`` drops everything not
flushed (optionally delivering some of it first, as librdkafka may have done before a
SIGKILL), starts a fresh agent and driver, restores from the state tables and replays
from the committed offsets: what a ``kill -9`` and a restart do, in a few
microseconds.

>>> from monitoring.runtime.agent import Emit, StreamAgent
>>> class Echo(StreamAgent[None]):
...     name, sources, state_topic = "echo", ("in",), "echo.state"
...     def restore(self, partition, table): return None
...     def snapshot(self, state): return None
...     def handle(self, msg, state, out):
...         out.send("out", msg.key, msg.value)
...         return 1
>>> rt = MemoryRuntime(Echo)
>>> rt.produce("in", b"hello").offset, [m.value for m in rt.unread()]
(0, [b'hello'])

``await rt.run_until_idle()`` then hands it to ``Echo`` and ``rt.values("out")`` is
``[b'hello']``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic

from prometheus_client import CollectorRegistry

from monitoring.runtime.agent import S, StreamAgent
from monitoring.runtime.driver import AgentDriver
from monitoring.runtime.fence import PartitionLost
from monitoring.runtime.outputs import Headers
from monitoring.runtime.shadow import Shadow

DEAD_LETTER_TOPIC = "dead-letter"


class Crashed(Exception):
    """The process died here (``MemorySink.crash_at_flush``)."""


@dataclass
class MemoryMessage:
    """A consumed message (the fields of Faust's ``Message`` the runtime uses)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: Any
    timestamp: float
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(frozen=True)
class Delivered:
    """A record the sink delivered; dead letters carry ``reason``, ``detail``, ``source``."""

    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: Headers | None = None
    reason: str | None = None
    detail: str | None = None
    source: MemoryMessage | None = None
    rejected: list[int] | None = None


class MemorySink:
    """Records wait in ``pending`` until ``flush``; then state records update the tables."""

    def __init__(self, state_topic: str, tables: dict[int, dict[bytes, bytes]]) -> None:
        self.state_topic = state_topic
        self.tables = tables
        self.pending: list[Delivered] = []
        self.delivered: list[Delivered] = []
        self.flush_ok = True  # False: the broker is slow (flush times out)
        self.crash_at_flush: int | None = None  # die inside the n-th flush from now (1: next)

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Enqueue one record."""
        self.pending.append(Delivered(topic, key, value, partition, headers))

    async def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        last_headers: Headers | None = None,
    ) -> None:
        """Enqueue a run of records, ``last_headers`` on the last one."""
        last = len(records) - 1
        for i, (key, value) in enumerate(records):
            await self.send(topic, key, value, partition, last_headers if i == last else None)

    async def dead_letter(
        self,
        topic: str,
        msg: Any,
        reason: str,
        detail: str,
        stage: str,
        rejected: list[int] | None = None,
    ) -> None:
        """Enqueue the message's bytes with the reason."""
        value = msg.value if isinstance(msg.value, bytes) else None
        self.pending.append(
            Delivered(topic, msg.key, value, None, None, reason, detail, msg, rejected)
        )

    async def send_dead_letter(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> bool:
        """Enqueue a dead letter of a part of a message (headers say why)."""
        h = {k: v.decode() if isinstance(v, bytes) else str(v) for k, v in headers}
        reason, detail = h.get("x-reason", ""), h.get("x-error", "")
        self.pending.append(Delivered(topic, key, value, None, headers, reason, detail))
        return True

    def poll(self) -> None:
        """Nothing to serve in memory."""

    async def flush(self) -> bool:
        """Deliver everything pending (unless ``flush_ok`` is False); raises ``Crashed``
        (delivering nothing: ``MemoryRuntime.crash`` decides) in the flush it was told."""
        if self.crash_at_flush is not None:
            self.crash_at_flush -= 1
            if self.crash_at_flush <= 0:
                self.crash_at_flush = None
                raise Crashed
        if not self.flush_ok:
            return False
        self.deliver(len(self.pending))
        return True

    def deliver_per_partition(self, counts: Sequence[int]) -> None:
        """Deliver a prefix of each (topic, partition)'s pending records (see
        ``MemoryRuntime.crash``); keyed records count as the partition of their key."""
        order: dict[tuple[str, Any], int] = {}
        taken: dict[tuple[str, Any], int] = {}
        keep: list[Delivered] = []
        for r in self.pending:
            g = _group(r)
            k = order.setdefault(g, len(order))
            if counts and taken.get(g, 0) < counts[k % len(counts)]:
                taken[g] = taken.get(g, 0) + 1
                keep.append(r)
        self.pending = keep
        self.deliver(len(keep))

    def deliver(self, n: int) -> None:
        """Deliver the first ``n`` pending records."""
        done, self.pending = self.pending[:n], self.pending[n:]
        for r in done:
            if r.topic == self.state_topic and r.partition is not None:
                table = self.tables.setdefault(r.partition, {})
                if r.value is None:
                    table.pop(r.key or b"", None)
                else:
                    table[r.key or b""] = r.value
            self.delivered.append(r)


class MemoryFence:
    """``runtime.fence.PartitionFence`` in memory: each write lands whole in the state
    tables, or not at all; ``take_over(p)`` is another worker acquiring ``p`` (this
    one's next write of ``p`` raises ``PartitionLost``)."""

    def __init__(self, tables: dict[int, dict[bytes, bytes]]) -> None:
        self.tables = tables
        self.held: set[int] = set()
        self.acquired: list[int] = []  # every acquire, in order
        self.write_ok = True  # False: the broker is slow (the commit times out)

    def acquire(self, p: int) -> None:
        """Fence former writers of ``p`` (nothing to do in memory)."""
        self.held.add(p)
        self.acquired.append(p)

    def release(self, p: int) -> None:
        """Close ``p``'s writer."""
        self.held.discard(p)

    def take_over(self, p: int) -> None:
        """Another worker acquired ``p``: this one is fenced."""
        self.held.discard(p)

    async def write(self, p: int, records: list[tuple[bytes, bytes | None]]) -> bool:
        """All of ``records`` in ``p``'s table, or nothing."""
        if p not in self.held:
            raise PartitionLost(p, "fenced")
        if not self.write_ok:
            return False
        table = self.tables.setdefault(p, {})
        for key, value in records:
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
        return True


def _group(r: Delivered) -> tuple[str, Any]:
    return (r.topic, r.partition if r.partition is not None else r.key)


class MemoryRuntime(Generic[S]):
    """An agent (made fresh by ``make_agent`` at start and after each crash) on
    in-memory partitions; the clock moves only with ``advance``."""

    def __init__(
        self,
        make_agent: Callable[[], StreamAgent[S]],
        registry: CollectorRegistry | None = None,
        fenced: bool = False,
    ) -> None:
        self.make_agent = make_agent
        self.registry = registry or CollectorRegistry()
        self.now = 0.0
        # None: a transaction marker (an offset no reader is ever handed)
        self.logs: dict[tuple[str, int], list[MemoryMessage | None]] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.tables: dict[int, dict[bytes, bytes]] = {}
        self.broker_up = True
        self.crashes = 0
        self.agent = make_agent()
        self.sink = MemorySink(self.agent.state_topic, self.tables)
        # ``fenced``: state in per-partition transactions (``runtime.fence``)
        self.fence = MemoryFence(self.tables) if fenced else None
        self.rejoins = 0  # the driver's requests for a rebalance (a test performs it)
        self._start()

    def _start(self) -> None:
        self.driver: AgentDriver[S] = AgentDriver(
            self.agent,
            self.sink,
            dead_letter_topic=DEAD_LETTER_TOPIC,
            read_state=lambda topic, p: dict(self.tables.get(p, {})),
            end_offsets=self._ends,
            registry=self.registry,
            clock=lambda: self.now,
            fence=self.fence,
            drained=self._drained,
        )
        self.driver.ack = self._ack
        self.driver.rejoin = self._rejoin
        self.read = dict(self.committed)

    def _rejoin(self) -> None:
        self.rejoins += 1

    # -- the source topics ---------------------------------------------------------
    def produce(
        self,
        topic: str,
        value: Any,
        partition: int = 0,
        key: bytes | None = None,
        timestamp_s: float | None = None,
    ) -> MemoryMessage:
        """Append a message to ``topic[partition]``."""
        log = self.logs.setdefault((topic, partition), [])
        ts = self.now if timestamp_s is None else timestamp_s
        msg = MemoryMessage(topic, partition, len(log), key, value, ts)
        log.append(msg)
        return msg

    def marker(self, topic: str, partition: int = 0) -> None:
        """Append a transaction marker to ``topic[partition]``: it takes an offset (the
        end offset counts it) and is never delivered, as a committed transaction's."""
        self.logs.setdefault((topic, partition), []).append(None)

    def unread(self) -> list[MemoryMessage]:
        """Messages not yet delivered to the agent, partitions interleaved."""
        per = [log[self.read.get(tp, 0) :] for tp, log in sorted(self.logs.items())]
        return [m for turn in itertools.zip_longest(*per) for m in turn if m is not None]

    async def poll(self, max_messages: int | None = None) -> int:
        """Hand the unread messages (at most ``max_messages``) to the agent as one run."""
        run = self.unread()[:max_messages]
        if run:
            await self.driver.process(run)
            for m in run:
                self.read[(m.topic, m.partition)] = m.offset + 1
        return len(run)

    async def run_until_idle(self) -> None:
        """Deliver every message, then checkpoint (outputs flushed, state written, acked)."""
        while await self.poll():
            pass
        await self.checkpoint()

    # -- the clock, checkpoints, failures ----------------------------------------------
    async def advance(self, seconds: float) -> None:
        """Move the clock, then run the idle timer once."""
        self.now += seconds
        await self.driver.idle_tick()

    async def checkpoint(self) -> bool:
        """A forced checkpoint (as the timer would take it, without the duty cycle)."""
        return await self.driver.checkpoint(force=True)

    async def crash_in_checkpoint(self, flush: int, delivered: int | Sequence[int]) -> None:
        """Start a checkpoint and die in its ``flush``-th flush (1: the outputs, 2: the
        state), with ``delivered`` of the pending records through (see ``crash``)."""
        self.sink.crash_at_flush = flush
        with contextlib.suppress(Crashed):
            await self.checkpoint()
        self.sink.crash_at_flush = None
        await self.crash(delivered)

    async def crash(self, delivered: int | Sequence[int] = 0) -> None:
        """SIGKILL and restart: part of the pending records reach the broker, the rest
        are lost; a fresh agent restores and replays from the commits.

        ``delivered``: the first n pending records; or, as the broker may have taken
        each partition's records independently, for the k-th (topic, partition) in
        pending order the first ``delivered[k % len(delivered)]`` of its records."""
        if isinstance(delivered, int):
            self.sink.deliver(delivered)
        else:
            self.sink.deliver_per_partition(delivered)
        self.sink.pending.clear()
        self.crashes += 1
        self.agent = self.make_agent()
        self._start()
        await self.driver.assigned(sorted({p for _, p in self.logs}))

    async def assign(self, partitions: Sequence[int]) -> None:
        """A rebalance gave these partitions."""
        await self.driver.assigned(partitions)

    async def revoke(self, partitions: Sequence[int]) -> None:
        """A rebalance took these partitions (checkpointed first); reading restarts at
        their committed offsets if they come back."""
        await self.driver.revoked(partitions)
        for tp in list(self.read):
            if tp[1] in partitions:
                self.read[tp] = self.committed.get(tp, 0)

    async def _ack(self, msg: MemoryMessage) -> None:
        tp = (msg.topic, msg.partition)
        self.committed[tp] = max(self.committed.get(tp, 0), msg.offset + 1)

    def _ends(self, topic: str, partitions: list[int]) -> dict[int, int] | None:
        if not self.broker_up:
            return None
        return {p: len(self.logs.get((topic, p), [])) for p in partitions}

    def _drained(self, topic: str, partition: int, offset: int, end: int) -> bool:
        return self.broker_up and not any(self.logs.get((topic, partition), [])[offset:end])

    def state(self, partition: int) -> dict[bytes, bytes]:
        """The committed state table of ``partition`` (what a restore reads)."""
        return Shadow.load(self.tables.get(partition, {}))[1]

    # -- what came out -----------------------------------------------------------------
    def records(self, topic: str) -> list[Delivered]:
        """Delivered records of ``topic`` (every run since the start, crashes included)."""
        return [r for r in self.sink.delivered if r.topic == topic]

    def values(self, topic: str) -> list[bytes | None]:
        """Delivered values of ``topic``."""
        return [r.value for r in self.records(topic)]

    def dead_letters(self) -> list[Delivered]:
        """Delivered dead letters."""
        return self.records(DEAD_LETTER_TOPIC)

    def metric(self, name: str, **labels: str) -> float:
        """A sample of the runtime's registry (0 if absent)."""
        return self.registry.get_sample_value(name, {"agent": self.agent.name, **labels}) or 0.0
