"""Per-partition agent state, restored from a compacted changelog and checkpointed.

The state half of the runtime (``runtime.driver``), for every stream agent: the state
of source partition ``p`` lives in partition ``p`` of a compacted state topic as keyed
records (latest wins, ``None`` deletes). On assignment the partition's table is read
back and handed to ``restore``. The driver applies messages unacked, each run under
``lock`` (until its outputs are enqueued), so that a checkpoint never sees a state
whose outputs are not yet sent. ``checkpoint`` (called from a timer) takes the
changed records of every partition from ``snapshot`` (``None``: unchanged), flushes
the agent's outputs, writes the records, flushes again and only then acks the source
messages, so Faust commits offsets no further than the changelog. A checkpoint the
broker did not acknowledge is kept and retried at the next call; nothing is acked
meanwhile.

A checkpoint counts whole or not at all (``runtime.shadow``: two slots per key and a
commit record), so a crash in the middle of writing one restores the previous one.

With a ``fence`` (``runtime.fence``, the workers' default) each partition's state is
written in a Kafka transaction of its own producer, acquired (fencing every former
writer of that partition) before the partition's state is read. A write the broker
fences means another worker owns the partition now: its state is dropped unwritten and
its messages unacked (``lost``), and the other partitions go on.

``restore`` and ``snapshot`` are the agent's: this module knows nothing of the state.
Both run in a worker thread (``asyncio.to_thread``): decoding or encoding thousands of
detectors takes seconds, and the loop must go on heartbeating and polling meanwhile,
or the group expels the worker. A restore builds a new state that nothing else sees
until it is installed, so it needs no lock (what it shares, such as a worker-wide
``SeriesBudget``, must be thread-safe). A snapshot reads and changes (clears the dirty
marks of) states the loop also uses: it runs while ``lock`` is held, and every loop-side
use of a state takes ``lock`` (the driver's messages, ticks, idle checks and
``observe``), so no state changes while the thread reads it.
A table ``restore`` cannot read (garbage written to the state topic, a format from a
future version) is logged as an error, its partition listed in ``unreadable``, and the
partition starts from an empty state rather than crash-loop the worker; agents that can
tell records apart drop only the bad ones themselves (the anomaly agent does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from monitoring.log import get_logger
from monitoring.runtime.changelog import read_table
from monitoring.runtime.fence import PartitionLost
from monitoring.runtime.outputs import Headers
from monitoring.runtime.shadow import Shadow

S = TypeVar("S")
Records = list[tuple[bytes, bytes | None]]
Ack = Callable[[Any], Awaitable[Any]]
"""Acks one processed source message or event (``Stream.ack``, ``BulkApp.ack``)."""
MAX_CHECKPOINT_DUTY = 0.1  # share of the worker's time checkpoints may take
# a checkpoint the broker was too slow for is retried this soon, whatever its duty: a
# fenced commit that timed out must be resumed before the broker aborts the transaction
# (``runtime.fence``: 60 s), else the partition's writer is fenced by its own timeout
RETRY_AFTER_S = 1.0
log = get_logger("partition_state")


T = TypeVar("T")


_FAILED = object()  # a slot whose snapshot raised (``PartitionStates._snapshots``)


async def _to_the_end(work: Awaitable[T]) -> tuple[T, bool]:
    """``work``'s result, waited for even if the caller is cancelled meanwhile, and
    whether it was: a snapshot thread cannot be stopped, and its records (the dirty
    marks it cleared) must be kept, and the lock held, until it ends."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while True:
        try:
            return await asyncio.shield(task), cancelled
        except asyncio.CancelledError:
            if task.cancelled():
                raise
            cancelled = True


class StateSink(Protocol):
    """Where checkpoints go: ``runtime.outputs.Outputs``, or memory in tests."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None: ...

    async def flush(self) -> bool: ...


class StateWriter(Protocol):
    """Fenced per-partition writers of the state topic (``runtime.fence.PartitionFence``)."""

    def acquire(self, p: int) -> None: ...

    def release(self, p: int) -> None: ...

    async def write(self, p: int, records: Records) -> bool: ...


@dataclass
class Slot(Generic[S]):
    """One assigned partition: its state and the source messages not yet acked."""

    state: S
    pending: list[Any] = field(default_factory=list)  # processed, not yet checkpointed
    last_event_wall: float = field(default_factory=time.monotonic)
    # a checkpoint taken but not yet acknowledged by the broker: its records (in write
    # order, the agent's last record last) and the source messages it covers
    unwritten: dict[bytes, bytes | None] = field(default_factory=dict)
    unacked: list[Any] = field(default_factory=list)
    shadow: Shadow = field(default_factory=Shadow)  # which slot holds each key's value


class PartitionStates(Generic[S]):
    """The assigned partitions of one source topic and their changelog-backed state."""

    def __init__(
        self,
        *,
        source_topic: str,
        state_topic: str,
        bootstrap: str,
        outputs: StateSink,
        restore: Callable[[int, dict[bytes, bytes]], S],
        snapshot: Callable[[S], Records | None],
        read_state: Callable[[str, int], dict[bytes, bytes]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        fence: StateWriter | None = None,
        release: Callable[[int, S], None] | None = None,
    ) -> None:
        self.source_topic = source_topic
        self.state_topic = state_topic
        self.bootstrap = bootstrap
        # the table of a state partition (``changelog.read_table``; in memory in tests)
        self._read_state = read_state or (lambda t, p: read_table(bootstrap, t, p))
        self.outputs = outputs
        self._restore_fn = restore
        self._snapshot = snapshot
        self._release = release  # the agent's: a state restored for nothing lets go
        self.slots: dict[int, Slot[S]] = {}
        self._restoring: dict[int, asyncio.Task[Slot[S]]] = {}
        self.lock = asyncio.Lock()  # held while a message changes state and sends outputs
        self._checkpointing = asyncio.Lock()
        self.max_duty = MAX_CHECKPOINT_DUTY
        self._clock = clock  # of the checkpoints' pacing (a manual one in tests)
        self._next_at = 0.0  # clock time before which a timer's checkpoint is skipped
        self.behind = False  # the last checkpoint left something for the broker to retry
        self.unreadable: list[int] = []  # partitions whose state did not restore
        self.fence = fence
        self.lost: set[int] = set()  # fenced: messages dropped until assigned again
        self.newly_lost: list[tuple[int, Slot[S]]] = []  # for the driver to let go of
        self.last_written: set[int] = set()  # partitions the last checkpoint wrote

    async def get(self, p: int) -> Slot[S]:
        """The slot of partition ``p``, restoring it from the changelog on first use."""
        slot = self.slots.get(p)
        if slot is not None:
            return slot
        task = self._restoring.get(p)
        if task is None:
            task = self._restoring[p] = asyncio.ensure_future(self._restore(p))
        slot = await task
        if self._restoring.get(p) is task:
            self.slots[p] = slot
            return slot
        # forgotten (revoked) while it restored: its state, and its writer unless the
        # partition is being restored again (that restore acquired a writer of its own)
        if self._release is not None:
            self._release(p, slot.state)
        if self.fence is not None and p not in self._restoring and p not in self.slots:
            self.fence.release(p)
        return slot

    async def _restore(self, p: int) -> Slot[S]:
        started = time.monotonic()
        if self.fence is not None:  # fence every former writer before reading
            await asyncio.to_thread(self.fence.acquire, p)
        physical = await asyncio.to_thread(self._read_state, self.state_topic, p)
        # the decode of a large partition takes seconds: off the loop, which must go on
        # heartbeating and polling (see ``restore`` in the module docstring)
        slot, readable, records = await asyncio.to_thread(self._decode, p, physical)
        if not readable:
            self.unreadable.append(p)
        log.info(
            "partition_restored",
            topic=self.state_topic,
            partition=p,
            records=records,
            seconds=round(time.monotonic() - started, 3),
        )
        return slot

    def _decode(self, p: int, physical: dict[bytes, bytes]) -> tuple[Slot[S], bool, int]:
        """``p``'s slot from its physical table (in a worker thread), whether it was
        readable, and its logical records."""
        try:
            shadow, table = Shadow.load(physical)
            return Slot(self._restore_fn(p, table), shadow=shadow), True, len(table)
        except Exception as e:  # garbage on the state topic must not crash-loop the worker
            log.error(
                "state_unreadable_starting_afresh",
                topic=self.state_topic,
                partition=p,
                records=len(physical),
                error=repr(e)[:300],
            )
            shadow = Shadow()
            shadow.purge = list(physical)  # else the next restore would read them again
            return Slot(self._restore_fn(p, {}), shadow=shadow), False, 0

    def processed(self, slot: Slot[S], message: Any) -> None:
        """Record that ``message`` (a Faust event or message) was applied to ``slot``'s
        state: acked after the next checkpoint."""
        slot.last_event_wall = time.monotonic()
        slot.pending.append(message)

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop the state of ``partitions`` (given up: their next owner restores it)."""
        for p in partitions:
            self.slots.pop(p, None)
            self._restoring.pop(p, None)
            self.lost.discard(p)
            if self.fence is not None:
                self.fence.release(p)

    def assigned(self, partitions: Iterable[int]) -> None:
        """``partitions`` are this worker's again: their messages count again."""
        self.lost.difference_update(partitions)

    async def checkpoint(self, ack: Ack | None, force: bool = False) -> bool:
        """Outputs, then state, then acks for every changed partition; True if written.

        Unless ``force``d (a rebalance, a shutdown), a checkpoint that follows the last
        one sooner than ``max_duty`` allows is skipped: catching up on a backlog, state
        changes many times faster than live and its checkpoints would take over the
        worker; spacing them only means more to replay after a crash (applied messages
        are skipped, so the result is the same). A checkpoint the broker was too slow
        for (a flush or a commit timed out) is retried ``RETRY_AFTER_S`` later: its time
        was spent waiting, not working.
        """
        if not force and self._clock() < self._next_at:
            return False
        started = self._clock()
        self.behind = False
        try:
            return await self._checkpoint(ack)
        finally:
            spacing = (self._clock() - started) * (1 / self.max_duty - 1)
            if self.behind:
                spacing = min(spacing, RETRY_AFTER_S)
            self._next_at = self._clock() + spacing

    async def _checkpoint(self, ack: Ack | None) -> bool:
        async with self._checkpointing:
            async with self.lock:  # no state changes while the thread reads them
                slots = list(self.slots.values())
                work = asyncio.to_thread(self._snapshots, slots)
                (taken, error), cancelled = await _to_the_end(work)
                for slot, records in zip(slots, taken, strict=True):
                    if records is _FAILED:
                        continue  # its messages stay pending: acked after a good one
                    for k, v in records or ():
                        slot.unwritten.pop(k, None)  # keep the write order of the latest
                        slot.unwritten[k] = v
                    slot.unacked += slot.pending  # unchanged state: acked after the flush
                    slot.pending = []
                if cancelled:
                    raise asyncio.CancelledError
                if error is not None:
                    raise error  # every other slot's records are kept
            todo = [(p, slot) for p, slot in self.slots.items() if slot.unwritten or slot.unacked]
            self.last_written = set(self.slots) if todo else set()
            if not todo:
                return False
            if not await self.outputs.flush():  # outputs before the state
                self.last_written, self.behind = set(), True
                return False
            if self.fence is not None:
                return await self._write_fenced(todo, ack)
            attempts = {}
            for p, slot in todo:
                if not (slot.unwritten or slot.shadow.doomed or slot.shadow.purge):
                    continue
                records, attempts[p] = slot.shadow.records(slot.unwritten)
                for key, value in records:
                    await self.outputs.send(self.state_topic, key, value, partition=p)
            if not await self.outputs.flush():
                self.last_written, self.behind = set(), True
                return False
            for p, slot in todo:
                await self._written(p, slot, attempts.get(p), ack)
            return True

    def _snapshots(self, slots: list[Slot[S]]) -> tuple[list[Any], Exception | None]:
        """Each slot's changed records (in a worker thread, under ``lock``), ``_FAILED``
        for a slot whose snapshot raised, and the first such error: the others' records
        are kept (their dirty marks are cleared as they are taken)."""
        taken: list[Any] = []
        error: Exception | None = None
        for slot in slots:
            try:
                taken.append(self._snapshot(slot.state))
            except Exception as e:
                taken.append(_FAILED)
                error = error or e
        return taken, error

    async def _written(self, p: int, slot: Slot[S], attempt: Any, ack: Ack | None) -> None:
        """``slot``'s checkpoint is on the broker: the state now, its messages acked."""
        if attempt is not None:
            slot.shadow.committed(attempt)
        slot.unwritten.clear()
        unacked, slot.unacked = slot.unacked, []
        if self.slots.get(p) is not slot or ack is None:
            return  # revoked meanwhile: the new owner replays these messages
        for message in unacked:
            await ack(message)

    async def _write_fenced(self, todo: list[tuple[int, Slot[S]]], ack: Ack | None) -> bool:
        """Each partition's records in a transaction of its own, concurrently; True if
        none is left to retry. A fenced partition is lost: dropped, never acked."""
        assert self.fence is not None
        fence = self.fence
        attempts: dict[int, Any] = {}

        async def write(p: int, slot: Slot[S]) -> bool:
            if not (slot.unwritten or slot.shadow.doomed or slot.shadow.purge):
                return True  # nothing to write: its messages are acked below
            records, attempts[p] = slot.shadow.records(slot.unwritten)
            return await fence.write(p, records)

        results = await asyncio.gather(*(write(p, s) for p, s in todo), return_exceptions=True)
        done = True
        error: BaseException | None = None
        for (p, slot), result in zip(todo, results, strict=True):
            if isinstance(result, PartitionLost):
                self._lose(p, slot, str(result))
            elif isinstance(result, BaseException):
                error = error or result  # raised once every other partition is settled
                self.last_written.discard(p)
            elif result:
                await self._written(p, slot, attempts.get(p), ack)
            else:
                self.last_written.discard(p)
                done = False
        self.behind = not done
        if error is not None:
            raise error  # a refused record (counted, retried), or OutputsLost (stop)
        return done

    def _lose(self, p: int, slot: Slot[S], reason: str) -> None:
        """Another worker fenced ``p``'s writer: drop its state unwritten (Kafka
        Streams' ``onPartitionsLost``); its messages are not acked."""
        self.last_written.discard(p)
        if self.slots.get(p) is not slot:
            return  # revoked meanwhile
        log.error(
            "partition_lost_fenced",
            topic=self.state_topic,
            partition=p,
            unacked=len(slot.unacked) + len(slot.pending),
            error=reason[:300],
        )
        self.slots.pop(p, None)
        self._restoring.pop(p, None)
        self.lost.add(p)
        self.newly_lost.append((p, slot))
