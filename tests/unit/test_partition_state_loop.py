"""PartitionStates decodes restores and takes snapshots off the event loop (issue 18):
the worker's loop must go on heartbeating while a large partition is read or written.

Structural, not timed: the agent's ``restore`` / ``snapshot`` wait for a signal that
only the running loop gives, so they fail if they run on the loop. The loop's block
itself is printed by ``monitoring bench loop-lag``."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from monitoring.runtime.partition_state import PartitionStates, Slot

WAIT_S = 10.0  # only reached when the code under test blocks the loop


class Sink:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None]] = []

    async def send(
        self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
        headers: Any = None,
    ) -> None:  # fmt: skip
        self.sent.append((key, value))

    async def flush(self) -> bool:
        return True


async def until(event: threading.Event) -> None:
    """Wait on the loop (it keeps running) for a thread's ``event``."""
    while not event.is_set():
        await asyncio.sleep(0.001)


def states(restore: Any, snapshot: Any, sink: Sink | None = None) -> PartitionStates[Any]:
    return PartitionStates(
        source_topic="src",
        state_topic="state",
        bootstrap="unused",
        outputs=sink or Sink(),
        restore=restore,
        snapshot=snapshot,
        read_state=lambda topic, p: {b"k": b"1"},
    )


def test_a_restore_decodes_while_the_loop_runs() -> None:
    started, loop_ran = threading.Event(), threading.Event()
    threads: list[int] = []

    def restore(p: int, table: dict[bytes, bytes]) -> dict[bytes, bytes]:
        threads.append(threading.get_ident())
        started.set()
        assert loop_ran.wait(WAIT_S), "the loop did not run while the restore decoded"
        return dict(table)

    async def run() -> dict[bytes, bytes]:
        ps = states(restore, lambda st: None)
        got = asyncio.ensure_future(ps.get(0))
        await until(started)  # the loop runs while the restore is under way
        loop_ran.set()
        slot = await got
        assert ps.slots[0] is slot and ps.unreadable == []
        return slot.state

    assert asyncio.run(run()) == {b"k": b"1"}
    assert threads and threads[0] != threading.get_ident()


def test_an_unreadable_table_still_starts_afresh_off_the_loop() -> None:
    def restore(p: int, table: dict[bytes, bytes]) -> dict[bytes, bytes]:
        if table:
            raise ValueError("garbage")
        return {}

    async def run() -> tuple[dict[bytes, bytes], list[int]]:
        ps = states(restore, lambda st: None)
        slot = await ps.get(3)
        return slot.state, ps.unreadable

    assert asyncio.run(run()) == ({}, [3])


def test_a_partition_forgotten_while_it_restores_is_not_installed() -> None:
    started, release = threading.Event(), threading.Event()

    def restore(p: int, table: dict[bytes, bytes]) -> dict[bytes, bytes]:
        started.set()
        assert release.wait(WAIT_S)
        return dict(table)

    released: list[tuple[int, Any]] = []

    async def run() -> dict[int, Slot[Any]]:
        ps = states(restore, lambda st: None)
        ps._release = lambda p, st: released.append((p, st))  # the agent's budget let go
        got = asyncio.ensure_future(ps.get(0))
        await until(started)
        ps.forget([0])  # revoked meanwhile
        release.set()
        await got
        return ps.slots

    assert asyncio.run(run()) == {}
    assert released == [(0, {b"k": b"1"})]


def test_a_snapshot_is_taken_off_the_loop_and_no_state_changes_meanwhile() -> None:
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    threads: list[int] = []

    def snapshot(st: dict[bytes, bytes]) -> list[tuple[bytes, bytes | None]] | None:
        threads.append(threading.get_ident())
        started.set()
        assert release.wait(WAIT_S), "the loop did not run while the snapshot was taken"
        order.append(f"snapshot {st[b'k']!r}")
        return list(st.items())

    async def run() -> Sink:
        sink = Sink()
        ps = states(lambda p, t: dict(t), snapshot, sink)
        ps.slots[0] = Slot({b"k": b"1"})
        checkpoint = asyncio.ensure_future(ps.checkpoint(None, force=True))
        await until(started)

        async def change() -> None:  # as the driver applies a message: under the lock
            async with ps.lock:
                ps.slots[0].state[b"k"] = b"2"
                order.append("change")

        changing = asyncio.ensure_future(change())
        for _ in range(20):  # the change would go ahead here if the lock were not held
            await asyncio.sleep(0)
        release.set()
        assert await checkpoint
        await changing
        return sink

    sink = asyncio.run(run())
    assert order == ["snapshot b'1'", "change"]
    assert threads and threads[0] != threading.get_ident()
    assert any(v is not None and v.endswith(b"1") for _, v in sink.sent)  # what was read


def test_a_checkpoint_cancelled_while_its_snapshot_runs_keeps_the_records_and_the_lock() -> None:
    started, release = threading.Event(), threading.Event()

    def snapshot(st: dict[bytes, bytes]) -> list[tuple[bytes, bytes | None]] | None:
        started.set()
        assert release.wait(WAIT_S)
        return list(st.items())

    async def run() -> tuple[bool, dict[bytes, bytes | None], bool]:
        ps = states(lambda p, t: dict(t), snapshot)
        ps.slots[0] = Slot({b"k": b"1"})
        checkpoint = asyncio.ensure_future(ps.checkpoint(None, force=True))
        await until(started)
        checkpoint.cancel()  # a shutdown stopping the timer
        for _ in range(20):
            await asyncio.sleep(0)
        held = ps.lock.locked()  # the thread still reads the state
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await checkpoint
        return held, dict(ps.slots[0].unwritten), checkpoint.cancelled()

    held, unwritten, cancelled = asyncio.run(run())
    assert held and cancelled
    assert unwritten == {b"k": b"1"}  # taken: the next checkpoint writes it
