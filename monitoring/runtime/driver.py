"""The runtime's core: one ``StreamAgent`` driven over its assigned partitions.

I/O comes in through three small parts, so that the same code runs on Faust and the
broker (``runtime.faust_app``) and in memory with a manual clock (``runtime.memory``):
a ``Sink`` (``runtime.outputs.Outputs``) for records, dead letters and checkpoints, a
function reading a state partition's table, and one giving the end offsets of source
partitions (None while the broker does not answer).

For each run of messages, under the state lock: each message's partition state is
restored on first use, the agent ``handle``s it, and what it asked for is sent (an
exception in ``handle`` dead-letters that message with reason ``processing-error``;
errors of the sink, such as ``OutputsLost``, stop the process). Checkpoints follow
``runtime.partition_state``: outputs flushed, then the changed state, then the source
messages acked. A partition is checkpointed before it is given up in a rebalance and
at shutdown, so neither replays anything. With a ``fence`` (``runtime.fence``) each
partition's state goes in a transaction of its own: a partition whose
writer was fenced is *lost*: its state is dropped unwritten, counted
(``agent_partitions_lost_total``), its messages are dropped unacked until it is
assigned here again, and the worker asks its consumer group to rejoin (Kafka Streams'
``TaskMigratedException``). The fencer may be another worker (this one was expelled and
has not heard yet: the rejoin tells it) or the broker itself, which aborts and fences a
transaction older than its timeout (a commit left pending through a long outage): no
other worker then owns the partition, and only the rejoin gives it back, restored from
its last committed state and read again from its committed offset.

Idle partitions: a source topic of a partition that has had no message for the agent's
``idle_timeout_s`` on the wall clock and has nothing left to read is *quiet*; the agent
may then close what waits for it. Nothing left to read: the end offset is the one after
the last message handled, or only transaction markers and aborted records lie before it
(``Drained``: a transactional writer such as the alert evaluator leaves a marker after
every commit, which is never delivered). Not while the broker does not answer, and not before
``max(idle_timeout_s, RECONNECT_GRACE_S)`` after it answers again: an outage must not
make late the records that producers held back during it, which they deliver a little
after the broker is back (librdkafka's reconnect backoff grows to 10 s). Outages are
watched from a quarter of the idle timeout of silence on (one probe a tick, the end
offsets of no partition), so an outage shorter than the idle timeout is seen too.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.log import get_logger
from monitoring.runtime.agent import DeadLetter, Emit, Record, S, StreamAgent
from monitoring.runtime.outputs import Headers, OutputsLost, dead_letter_headers
from monitoring.runtime.partition_state import PartitionStates, Slot, StateSink, StateWriter

log = get_logger("runtime")
# Idle closes wait this long at least after the broker answers again (s): producers'
# reconnect backoff (librdkafka's reconnect.backoff.max.ms, 10 s) plus a retry
RECONNECT_GRACE_S = 15.0
# rejoins a worker asks for after fenced partitions: at most one per backoff, which
# doubles from the first to the last while losses keep coming (a fence that repeats
# after each restore must not become a rebalance storm of the whole group)
REJOIN_BACKOFF_S = (30.0, 600.0)
EndOffsets = Callable[[str, list[int]], dict[int, int] | None]
"""End offsets of ``topic``'s given partitions (the high watermark: an open transaction
counts as something to read); None if the broker does not answer."""
Drained = Callable[[str, int, int, int], bool]
"""``(topic, partition, offset, end)``: whether a reader of committed records at ``offset``
reaches ``end`` without a record to read (only transaction markers and aborted records
lie between); False if unsure (the broker does not answer, a transaction is open)."""


class Sink(StateSink, Protocol):
    """Where an agent's records go (``runtime.outputs.Outputs``)."""

    async def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        last_headers: Headers | None = None,
    ) -> None: ...

    async def dead_letter(
        self,
        topic: str,
        msg: Any,
        reason: str,
        detail: str,
        stage: str,
        rejected: list[int] | None = None,
    ) -> None: ...

    async def send_dead_letter(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> bool: ...

    def poll(self) -> None: ...


class RuntimeMetrics:
    """The self-metrics every agent has, labelled by agent (one set per registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "agent_messages", "Source messages processed", ["agent"], registry=registry
        )
        self.items = Counter(
            "agent_items", "Items processed (samples, points, lines)", ["agent"],
            registry=registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "agent_dead_letters", "Messages sent to the dead-letter topic", ["agent", "reason"],
            registry=registry,
        )  # fmt: skip
        self.replayed = Counter(
            "agent_replayed_messages", "Messages skipped as already in the restored state",
            ["agent"], registry=registry,
        )  # fmt: skip
        self.checkpoint_seconds = Histogram(
            "agent_checkpoint_seconds", "Time to flush outputs and write a checkpoint",
            ["agent"], registry=registry,
        )  # fmt: skip
        self.partitions = Gauge(
            "agent_partitions", "Assigned source partitions", ["agent"], registry=registry
        )
        self.checkpoint_failures = Counter(
            "agent_checkpoint_failures", "Checkpoints a refused record made fail (retried)",
            ["agent"], registry=registry,
        )  # fmt: skip
        self.unreadable = Counter(
            "agent_state_unreadable", "State partitions that did not restore (started afresh)",
            ["agent"], registry=registry,
        )  # fmt: skip
        self.lost = Counter(
            "agent_partitions_lost",
            "Partitions whose state writer another worker fenced (state dropped unwritten)",
            ["agent"], registry=registry,
        )  # fmt: skip


_metrics: weakref.WeakKeyDictionary[CollectorRegistry, RuntimeMetrics] = weakref.WeakKeyDictionary()


def metrics_for(registry: CollectorRegistry) -> RuntimeMetrics:
    """The registry's one ``RuntimeMetrics`` (every agent of a process shares it)."""
    m = _metrics.get(registry)
    if m is None:
        m = _metrics[registry] = RuntimeMetrics(registry)
    return m


class AgentDriver(Generic[S]):
    """Runs ``agent`` over its partitions (see the module docstring)."""

    def __init__(
        self,
        agent: StreamAgent[S],
        sink: Sink,
        *,
        dead_letter_topic: str,
        read_state: Callable[[str, int], dict[bytes, bytes]],
        end_offsets: EndOffsets,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
        fence: StateWriter | None = None,
        drained: Drained | None = None,
    ) -> None:
        self.agent = agent
        agent.clock = clock
        self.drained = drained
        self.sink = sink
        self.dead_letter_topic = dead_letter_topic
        self.end_offsets = end_offsets
        self.clock = clock
        self.states: PartitionStates[S] = PartitionStates(
            source_topic=agent.sources[0],
            state_topic=agent.state_topic,
            bootstrap="",
            outputs=sink,
            restore=agent.restore,
            snapshot=agent.snapshot,
            read_state=read_state,
            fence=fence,
            release=agent.release,
        )
        m = metrics_for(registry)
        name = agent.name
        self._messages = m.messages.labels(name)
        self._items = m.items.labels(name)
        self._replayed = m.replayed.labels(name)
        self._checkpoint_seconds = m.checkpoint_seconds.labels(name)
        self._partitions = m.partitions.labels(name)
        self._unreadable = m.unreadable.labels(name)
        self._checkpoint_failures = m.checkpoint_failures.labels(name)
        self._lost = m.lost.labels(name)
        self._dead = m.dead_letters
        self._heard: dict[tuple[int, str], float] = {}  # (partition, topic) -> clock
        self._positions: dict[tuple[int, str], int] = {}  # the offset after the last handled
        self._idle_lock = asyncio.Lock()
        self._broker_down = False
        self._broker_back_at = clock()
        self._grace_until = float("-inf")  # no idle close before (after an outage)
        self._restoring: set[int] = set()  # partitions assigned, their state being read
        self.assigned_once = False  # the group gave this process its first assignment
        self.ack: Callable[[Any], Any] | None = None  # acks a source message once stored
        self.rejoin: Callable[[], Any] | None = None  # asks the consumer group for a rebalance
        self._rejoin_due = False  # partitions were lost: a rejoin is wanted
        self._rejoin_at = float("-inf")  # clock time of the last rejoin asked for
        self._rejoin_wait = 0.0  # after the last rejoin, before the next
        self._rejoin_backoff = REJOIN_BACKOFF_S[0]  # the wait after the next

    # -- messages ------------------------------------------------------------------
    async def process(self, messages: Sequence[Record]) -> None:
        """One run of messages, each partition's in offset order."""
        lost = self.states.lost
        if lost:  # fenced: another worker owns them; their messages are not ours
            messages = [m for m in messages if m.partition not in lost]
            if not messages:
                return
        slots = {p: await self.slot(p) for p in {m.partition for m in messages}}
        items = 0
        now = self.clock()
        async with self.states.lock:  # a checkpoint waits for the outputs
            # a partition revoked while it restored is not ours: its new owner handles it
            current = {p: s for p, s in slots.items() if self.states.slots.get(p) is s}
            for msg in messages:
                slot = current.get(msg.partition)
                if slot is None:
                    continue
                self.states.processed(slot, msg)
                slot.last_event_wall = now
                self._heard[(msg.partition, msg.topic)] = now
                self._positions[(msg.partition, msg.topic)] = msg.offset + 1
                out = Emit()
                try:
                    items += self.agent.handle(msg, slot.state, out)
                except Exception as e:  # a bug or an input it did not expect: keep going
                    log.exception(
                        "handle_failed", agent=self.agent.name, topic=msg.topic,
                        partition=msg.partition, offset=msg.offset,
                    )  # fmt: skip
                    out = Emit()
                    out.dead_letter("processing-error", repr(e)[:2000])
                await self._publish(out, msg)
        self._messages.inc(len(messages))
        self._items.inc(items)
        self.sink.poll()  # delivery callbacks, once per run

    async def slot(self, p: int) -> Slot[S]:
        """Partition ``p``'s slot, restored from its changelog on first use."""
        slot = self.states.slots.get(p)
        if slot is not None:
            return slot
        known = len(self.states.unreadable)
        slot = await self.states.get(p)
        if len(self.states.unreadable) > known:
            self._unreadable.inc(len(self.states.unreadable) - known)
        if self.states.slots.get(p) is not slot:
            return slot  # revoked while it restored: not ours, nothing to track
        now = self.clock()
        slot.last_event_wall = now  # a restored partition gets a whole idle timeout
        for t in self.agent.sources:
            self._heard.setdefault((p, t), now)
        return slot

    async def _publish(self, out: Emit, msg: Record | None) -> None:
        for send in out.sends:
            await self.sink.send_many(send.topic, send.records, send.partition, send.last_headers)
        if out.replayed:
            self._replayed.inc()
        for d in out.dead:
            self._dead.labels(self.agent.name, d.reason).inc()
            if msg is None:
                log.error("dead_letter_without_message", agent=self.agent.name, reason=d.reason)
            elif d.value is None:
                await self.sink.dead_letter(
                    self.dead_letter_topic, msg, d.reason, d.detail, self.agent.name, d.rejected
                )
            else:
                await self._dead_letter_part(msg, d)

    async def _dead_letter_part(self, msg: Record, d: DeadLetter) -> None:
        log.warning(
            "dead_letter", stage=self.agent.name, reason=d.reason, error=d.detail[:200],
            topic=msg.topic, partition=msg.partition, offset=msg.offset,
        )  # fmt: skip
        headers = dead_letter_headers(
            d.reason, d.detail, msg.topic, msg.partition, msg.offset, self.agent.name
        )
        key = msg.key.encode() if isinstance(msg.key, str) else msg.key
        await self.sink.send_dead_letter(
            self.dead_letter_topic, key, d.value, headers + list(d.headers or [])
        )

    # -- timers --------------------------------------------------------------------
    async def checkpoint_tick(self) -> None:
        """Checkpoint every changed partition, at most as often as the duty cycle allows.

        A record the producer refuses (not ``OutputsLost``: that stops the process, so
        that a restart replays) is logged and counted, and the whole checkpoint is
        tried again at the next tick; nothing is acked meanwhile."""
        started = time.monotonic()
        try:
            written = await self.checkpoint()
        except OutputsLost:
            raise
        except Exception as e:
            self._checkpoint_failures.inc()
            log.error("checkpoint_failed", agent=self.agent.name, error=repr(e)[:300])
            return
        if written:
            self._checkpoint_seconds.observe(time.monotonic() - started)
        async with self.states.lock:  # not while a checkpoint's thread reads the states
            self.agent.observe(self.view())

    async def checkpoint(self, force: bool = False, ack: bool = True) -> bool:
        """Outputs, then state, then acks (``runtime.partition_state``); True if written."""
        try:
            written = await self.states.checkpoint(self.ack if ack else None, force=force)
        finally:
            self._let_go_of_lost()
            self._maybe_rejoin()
        for p in sorted(self.states.last_written):
            slot = self.states.slots.get(p)
            if slot is not None:
                self.agent.checkpointed(slot.state)
        self.states.last_written = set()
        return written

    def _let_go_of_lost(self) -> None:
        """Partitions a checkpoint found fenced: forget them as if revoked, and rejoin
        the group (module docstring)."""
        lost = []
        while self.states.newly_lost:
            p, slot = self.states.newly_lost.pop()
            lost.append(p)
            self._lost.inc()
            self.agent.release(p, slot.state)
            for t in self.agent.sources:
                self._heard.pop((p, t), None)
                self._positions.pop((p, t), None)
            self._partitions.set(len(self.states.slots))
        if lost:
            self._rejoin_due = True
            log.warning("partitions_lost", agent=self.agent.name, lost=sorted(lost))

    def _maybe_rejoin(self) -> None:
        """Ask for the rejoin lost partitions want, unless one was asked for less than
        the backoff ago (``REJOIN_BACKOFF_S``); a failure to ask is logged, not raised
        (it must not hide the checkpoint's own error)."""
        if not self._rejoin_due or self.rejoin is None:
            return
        now = self.clock()
        if now - self._rejoin_at < self._rejoin_wait:
            return
        first, last = REJOIN_BACKOFF_S
        if now - self._rejoin_at > last + self._rejoin_wait:
            self._rejoin_backoff = first  # calm for a while: start over
        try:
            asked = self.rejoin()
        except Exception as e:
            log.error("rejoin_failed", agent=self.agent.name, error=repr(e)[:300])
            return
        if asked is False:
            return  # the consumer has not started: asked again at the next checkpoint
        log.warning("rejoin_requested", agent=self.agent.name, next_after_s=self._rejoin_backoff)
        self._rejoin_due = False
        self._rejoin_at, self._rejoin_wait = now, self._rejoin_backoff
        self._rejoin_backoff = min(self._rejoin_backoff * 2, last)

    async def idle_tick(self) -> None:
        """Let the agent close what waits on its quiet source topics (module docstring)."""
        idle_s = self.agent.idle_timeout_s
        if idle_s is None:
            return
        async with self.states.lock:
            for p, slot in list(self.states.slots.items()):
                out = Emit()
                self.agent.tick(p, slot.state, out)
                await self._publish(out, None)
        async with self._idle_lock:
            now = self.clock()
            since = self._broker_back_at
            async with self.states.lock:  # the states are read: not while a checkpoint is
                wanting = [
                    p for p, s in self.states.slots.items() if self.agent.wants_idle(s.state)
                ]
            silent = {  # partition -> its source topics with no message for idle_s
                p: [
                    t
                    for t in self.agent.sources
                    if now - max(self._heard.get((p, t), now), since) >= idle_s
                ]
                for p in wanting
            }
            silent = {p: ts for p, ts in silent.items() if ts}
            if not silent:
                hushed = any(  # a quarter of the idle timeout without a message: watch
                    now - max(self._heard.get((p, t), now), since) >= idle_s / 4
                    for p in wanting
                    for t in self.agent.sources
                )
                if hushed or self._broker_down:
                    self._broker_seen(await self._ends([]) is not None, idle_s)
                return
            ends = await self._ends(sorted(silent))
            if not self._broker_seen(ends is not None, idle_s) or ends is None:
                return
            if self.clock() < self._grace_until:
                return  # producers still delivering what they held in the outage
            checkpoint = False
            for p, topics in silent.items():
                async with self.states.lock:  # not while a checkpoint's thread reads it
                    owned = self.states.slots.get(p)
                    if owned is None:
                        continue  # revoked meanwhile
                    at = {t: self._next_offset(p, owned.state, t) for t in topics}
                quiet = frozenset([t for t in topics if await self._read_all(p, t, at[t], ends[t])])
                if not quiet:
                    continue  # messages are waiting: not idle
                async with self.states.lock:
                    if self.states.slots.get(p) is not owned:
                        continue  # revoked meanwhile
                    out = Emit()
                    checkpoint |= self.agent.idle(p, owned.state, quiet, out)
                    await self._publish(out, None)
            if checkpoint:
                await self.checkpoint(force=True)

    def _broker_seen(self, answered: bool, idle_s: float) -> bool:
        """Track outages from the end-offset probes: False while the broker does not
        answer and on the probe it answers again (the idle clocks restart then, and no
        idle close comes before ``max(idle_s, RECONNECT_GRACE_S)``); True otherwise."""
        if not answered:
            if not self._broker_down:
                log.warning("idle_check_skipped", agent=self.agent.name, reason="broker down")
            self._broker_down = True
            return False
        if self._broker_down:
            self._broker_down = False
            self._broker_back_at = now = self.clock()
            self._grace_until = now + max(idle_s, RECONNECT_GRACE_S)
            log.info(
                "broker_back", agent=self.agent.name, idle_close_after_s=self._grace_until - now
            )
            return False
        return True

    async def _ends(self, partitions: list[int]) -> dict[str, dict[int, int]] | None:
        ends = {}
        for topic in self.agent.sources:
            got = await asyncio.to_thread(self.end_offsets, topic, partitions)
            if got is None:
                return None
            ends[topic] = got
        return ends

    async def _read_all(self, p: int, topic: str, at: int, ends: dict[int, int]) -> bool:
        """Whether nothing is left to read on ``topic[p]``: its end is ``at`` (the offset
        after the last message applied), or only transaction markers (the last offset of
        every committed or aborted transaction, never delivered) and aborted records lie
        between them."""
        end = ends.get(p, 0)
        if end <= at:
            return True
        return self.drained is not None and await asyncio.to_thread(self.drained, topic, p, at, end)

    def _next_offset(self, p: int, state: S, topic: str) -> int:
        """The offset after the last message of ``topic[p]`` applied to ``state``."""
        known = self.agent.next_offset(state, topic)
        return max(self._positions.get((p, topic), 0), -1 if known is None else known)

    # -- rebalance and shutdown ----------------------------------------------------
    async def assigned(self, partitions: Sequence[int]) -> None:
        """Restore newly assigned source partitions (``restoring`` in the health meanwhile)."""
        self.states.assigned(partitions)
        todo = [p for p in partitions if p not in self.states.slots]
        self._restoring.update(todo)
        try:
            await asyncio.gather(*(self.slot(p) for p in todo))
        finally:
            self._restoring.difference_update(todo)
        self.assigned_once = True
        self._partitions.set(len(self.states.slots))

    async def revoked(self, partitions: Sequence[int]) -> None:
        """Checkpoint first (the next owner, perhaps this worker, restores the state and
        skips what it covers), then forget the partitions."""
        await self.checkpoint(force=True)
        for p in partitions:
            slot = self.states.slots.get(p)
            if slot is not None:
                self.agent.release(p, slot.state)
        self.states.forget(partitions)
        for p in partitions:
            for t in self.agent.sources:
                self._heard.pop((p, t), None)
                self._positions.pop((p, t), None)
        self._partitions.set(len(self.states.slots))

    async def shutdown(self) -> None:
        """Write the state of everything applied; no acks (the consumer is gone)."""
        await self.checkpoint(force=True, ack=False)
        log.info("shutdown_checkpoint", agent=self.agent.name, partitions=sorted(self.states.slots))

    # -- views ---------------------------------------------------------------------
    def view(self) -> Mapping[int, S]:
        """The state of each assigned partition."""
        return {p: s.state for p, s in self.states.slots.items()}

    def health(self) -> dict[str, Any]:
        """``ok`` unless the broker was last found unreachable, and the agent's fields;
        ``restoring`` partitions and ``not_ready`` before the first assignment (readiness:
        ``api.health``)."""
        slots = dict(self.states.slots)
        out = {
            "status": "unavailable" if self._broker_down else "ok",
            "partitions": sorted(slots),
            "restoring": sorted(self._restoring),
            "unacked_messages": sum(len(s.pending) + len(s.unacked) for s in slots.values()),
            **self.agent.health(self.view()),
        }
        if not self.assigned_once:
            out["not_ready"] = ["waiting for the first partition assignment"]
        return out

    def owned(self) -> dict[str, list[int]]:
        """The source partitions this driver holds: ``{topic: [partition, ...]}``."""
        parts = sorted(dict(self.states.slots))  # a copy: called from the status thread
        return {t: parts for t in self.agent.sources}
