"""PartitionStates' checkpoint pacing, with a stand-in producer (no Kafka)."""

from __future__ import annotations

import asyncio
from typing import Any

from monitoring.runtime.partition_state import RETRY_AFTER_S, PartitionStates, Slot
from monitoring.runtime.shadow import COMMIT_KEY


class SlowOutputs:
    """Records what is sent; each flush takes ``delay`` seconds of a manual clock."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.now = 0.0
        self.sent: list[tuple[str, bytes, Any]] = []

    def clock(self) -> float:
        return self.now

    async def flush(self) -> bool:
        self.now += self.delay
        return True

    async def send(self, topic: str, key: bytes, value: Any, partition: int | None = None) -> None:
        self.sent.append((topic, key, value))


def states(outputs: SlowOutputs) -> PartitionStates[dict[bytes, bytes]]:
    ps: PartitionStates[dict[bytes, bytes]] = PartitionStates(
        source_topic="src",
        state_topic="state",
        bootstrap="unused",
        outputs=outputs,  # type: ignore[arg-type]
        restore=lambda p, table: dict(table),
        snapshot=lambda st: list(st.items()) or None,
        clock=outputs.clock,
    )
    ps.slots[0] = Slot({b"k": b"1"})
    return ps


def test_checkpoints_take_at_most_their_duty_share_unless_forced() -> None:
    async def run() -> list[bool]:
        out = SlowOutputs(0.05)  # two flushes: 0.1 s a checkpoint
        ps = states(out)
        ps.max_duty = 0.5  # the next may start 0.1 s after one ends
        first = await ps.checkpoint(None)
        ps.slots[0].state[b"k"] = b"2"
        too_soon = await ps.checkpoint(None)
        forced = await ps.checkpoint(None, force=True)
        ps.slots[0].state[b"k"] = b"3"
        out.now += 0.15  # past the pause the forced one's 0.1 s asks for
        later = await ps.checkpoint(None)
        # each value behind its checkpoint's header, each commit record after them
        assert [v[-1:] for _, k, v in out.sent if k != COMMIT_KEY] == [b"1", b"2", b"3"]
        return [first, too_soon, forced, later]

    assert asyncio.run(run()) == [True, False, True, True]


class TimingOutOutputs(SlowOutputs):
    """A broker that does not answer until ``back``: each flush waits ``delay`` and
    fails; counts the flushes (the attempts)."""

    back = False
    flushes = 0

    async def flush(self) -> bool:
        self.flushes += 1
        self.now += self.delay
        return self.back


def test_a_checkpoint_the_broker_timed_out_is_retried_soon_whatever_its_duty() -> None:
    """A commit that timed out after 10 s is retried RETRY_AFTER_S later, not 90 s later
    (its duty share): the broker would abort a fenced transaction left that long."""

    async def run() -> list[tuple[bool, int]]:
        out = TimingOutOutputs(10.0)
        ps = states(out)  # max_duty 0.1: a 10 s checkpoint would wait 90 s
        seen = [(await ps.checkpoint(None), out.flushes)]  # one flush, failed
        out.now += RETRY_AFTER_S
        seen.append((await ps.checkpoint(None), out.flushes))  # attempted again
        out.back = True
        out.now += RETRY_AFTER_S
        seen.append((await ps.checkpoint(None), out.flushes))  # written: two flushes
        ps.slots[0].state[b"k"] = b"2"
        out.now += RETRY_AFTER_S
        seen.append((await ps.checkpoint(None), out.flushes))  # 20 s done: paced again
        return seen

    assert asyncio.run(run()) == [(False, 1), (False, 2), (True, 4), (False, 4)]


def test_one_failing_snapshot_keeps_the_other_partitions_records() -> None:
    """An agent clears its dirty marks as it snapshots: records taken from the other
    partitions before (or after) one that raises must be written, not dropped."""

    def snap(st: dict[bytes, bytes]) -> list[tuple[bytes, bytes]] | None:
        if b"boom" in st:
            raise ValueError("boom")
        records = list(st.items())
        st.clear()  # taken: not dirty any more
        return records or None

    async def run() -> list[bytes]:
        out = SlowOutputs(0.0)
        ps: PartitionStates[dict[bytes, bytes]] = PartitionStates(
            source_topic="src", state_topic="state", bootstrap="unused",
            outputs=out,  # type: ignore[arg-type]
            restore=lambda p, table: dict(table), snapshot=snap, clock=out.clock,
        )  # fmt: skip
        ps.slots[0] = Slot({b"k": b"1"})
        ps.slots[1] = Slot({b"boom": b"x"})
        ps.slots[2] = Slot({b"j": b"2"})
        try:
            await ps.checkpoint(None, force=True)
        except ValueError:
            pass
        else:
            raise AssertionError("the snapshot's error is raised")
        del ps.slots[1].state[b"boom"]
        assert await ps.checkpoint(None, force=True)
        return sorted(v[-1:] for _, k, v in out.sent if k != COMMIT_KEY)

    assert asyncio.run(run()) == [b"1", b"2"]
