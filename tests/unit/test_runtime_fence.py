"""The runtime's handling of fenced state writers (``runtime.fence``), in memory.

A partition whose writer another worker fenced is lost: its state is dropped unwritten,
its messages are not acked (nor processed any more until it is assigned again), the
loss is counted, and the worker's other partitions go on. Every partition's writer is
acquired before its state is read.
"""

from __future__ import annotations

from monitoring.runtime.agent import Emit, Record, Records, StreamAgent
from monitoring.runtime.memory import MemoryRuntime


class Counter(StreamAgent[dict[str, int]]):
    """Counts messages per partition; outputs the count after each one."""

    name = "counter"
    sources = ("events",)
    state_topic = "counter.state"

    def restore(self, partition: int, table: dict[bytes, bytes]) -> dict[str, int]:
        n, offset = map(int, table.get(b"n", b"0,-1").split(b","))
        return {"n": n, "offset": offset, "dirty": 0}

    def snapshot(self, state: dict[str, int]) -> Records | None:
        if not state["dirty"]:
            return None
        state["dirty"] = 0
        return [(b"n", b"%d,%d" % (state["n"], state["offset"]))]

    def handle(self, msg: Record, state: dict[str, int], out: Emit) -> int:
        if msg.offset <= state["offset"]:
            out.skip_replayed()
            return 0
        state["n"] += 1
        state["offset"], state["dirty"] = msg.offset, 1
        out.send("counts", str(msg.offset).encode(), str(state["n"]).encode(), msg.partition)
        return 1


def produce(rt: MemoryRuntime[dict[str, int]], partition: int, n: int) -> None:
    for _ in range(n):
        rt.produce("events", b"x", partition)


async def test_a_fenced_partition_is_dropped_and_the_others_go_on() -> None:
    rt = MemoryRuntime(Counter, fenced=True)
    assert rt.fence is not None
    await rt.assign([0, 1])
    produce(rt, 0, 3)
    produce(rt, 1, 2)
    await rt.poll()
    assert await rt.checkpoint()
    assert rt.state(0) == {b"n": b"3,2"} and rt.state(1) == {b"n": b"2,1"}
    produce(rt, 0, 2)
    produce(rt, 1, 2)
    await rt.poll()
    rt.fence.take_over(0)  # another worker acquired partition 0 meanwhile
    assert await rt.checkpoint()  # nothing left to retry: 1 written, 0 lost
    assert rt.state(0) == {b"n": b"3,2"}  # the new owner's view: nothing stale from us
    assert rt.state(1) == {b"n": b"4,3"}
    assert rt.committed[("events", 0)] == 3  # the lost messages are not acked
    assert rt.committed[("events", 1)] == 4
    assert rt.metric("agent_partitions_lost_total") == 1
    assert rt.driver.health()["partitions"] == [1]
    # messages of the lost partition still fetched are not ours: not handled, no outputs
    outputs = len(rt.values("counts"))
    handled = rt.metric("agent_messages_total")
    produce(rt, 0, 2)
    produce(rt, 1, 1)
    await rt.poll()
    assert rt.metric("agent_messages_total") == handled + 1
    assert await rt.checkpoint()
    assert len(rt.values("counts")) == outputs + 1
    assert rt.state(1) == {b"n": b"5,4"}
    assert rt.committed[("events", 0)] == 3
    assert rt.fence.acquired == [0, 1]  # no restore, so no acquire, of the lost one


async def test_a_partition_assigned_again_is_acquired_before_it_is_restored() -> None:
    rt = MemoryRuntime(Counter, fenced=True)
    assert rt.fence is not None
    events: list[tuple[str, int]] = []
    fence_acquire, read_state = rt.fence.acquire, rt.driver.states._read_state

    def acquire(p: int) -> None:
        events.append(("acquire", p))
        fence_acquire(p)

    def read(topic: str, p: int) -> dict[bytes, bytes]:
        events.append(("read", p))
        return read_state(topic, p)

    rt.fence.acquire = acquire  # type: ignore[method-assign]
    rt.driver.states._read_state = read
    await rt.assign([0])
    produce(rt, 0, 2)
    await rt.poll()
    rt.fence.take_over(0)
    await rt.checkpoint()
    assert rt.metric("agent_partitions_lost_total") == 1
    await rt.revoke([0])  # the rebalance that follows
    await rt.assign([0])  # and the partition comes back (the other worker left)
    await rt.poll()  # replayed from the committed offsets
    assert await rt.checkpoint()
    assert rt.state(0) == {b"n": b"2,1"}
    assert rt.committed[("events", 0)] == 2
    assert events == [("acquire", 0), ("read", 0), ("acquire", 0), ("read", 0)]


async def test_a_slow_commit_keeps_the_checkpoint_for_the_next_tick() -> None:
    rt = MemoryRuntime(Counter, fenced=True)
    assert rt.fence is not None
    await rt.assign([0])
    produce(rt, 0, 2)
    await rt.poll()
    rt.fence.write_ok = False
    assert not await rt.checkpoint()
    assert rt.state(0) == {} and ("events", 0) not in rt.committed
    rt.fence.write_ok = True
    assert await rt.checkpoint()
    assert rt.state(0) == {b"n": b"2,1"} and rt.committed[("events", 0)] == 2
    assert rt.metric("agent_partitions_lost_total") == 0


async def test_a_partition_fenced_by_its_own_timeout_comes_back_through_a_rejoin() -> None:
    """The broker aborts a transaction older than its timeout and fences its writer: no
    other worker owns the partition, so only the rejoin the driver asks for gives it
    back, restored from the last committed state, its messages read again."""
    rt = MemoryRuntime(Counter, fenced=True)
    assert rt.fence is not None
    await rt.assign([0, 1])
    produce(rt, 0, 2)
    produce(rt, 1, 1)
    await rt.poll()
    assert await rt.checkpoint() and rt.rejoins == 0
    produce(rt, 0, 3)
    await rt.poll()
    rt.fence.take_over(0)  # the broker's timeout: nobody else acquired it
    await rt.checkpoint()
    assert rt.metric("agent_partitions_lost_total") == 1
    assert rt.rejoins == 1  # asked once, for the loss
    await rt.checkpoint()
    assert rt.rejoins == 1  # not again without a new loss
    await rt.revoke([0, 1])  # the rebalance the rejoin starts: everything comes back
    await rt.assign([0, 1])
    await rt.poll()  # partition 0 replayed from its committed offset
    assert await rt.checkpoint()
    assert rt.state(0) == {b"n": b"5,4"} and rt.committed[("events", 0)] == 5
    assert rt.state(1) == {b"n": b"1,0"}
    # the replay sends the lost messages' outputs again, the same values (at least once:
    # the store keeps one row per window)
    assert rt.values("counts")[-3:] == [b"3", b"4", b"5"]


async def test_rejoins_back_off_while_losses_keep_coming() -> None:
    """A fence that repeats after every restore must not make a rebalance storm: one
    rejoin per backoff, the backoff doubling, and the one wanted is not forgotten."""
    from monitoring.runtime.driver import REJOIN_BACKOFF_S

    rt = MemoryRuntime(Counter, fenced=True)
    assert rt.fence is not None
    first = REJOIN_BACKOFF_S[0]

    async def lose_partition_0() -> None:
        await rt.revoke([0])
        await rt.assign([0])
        produce(rt, 0, 1)
        await rt.poll()
        rt.fence.take_over(0)
        await rt.checkpoint()

    await rt.assign([0])
    await lose_partition_0()
    assert rt.rejoins == 1
    await lose_partition_0()  # at once again: within the backoff
    assert rt.rejoins == 1
    rt.now += first - 1
    await rt.checkpoint()
    assert rt.rejoins == 1
    rt.now += 1
    await rt.checkpoint()  # the backoff is over: the wanted rejoin is asked for
    assert rt.rejoins == 2
    await lose_partition_0()
    rt.now += first
    await rt.checkpoint()
    assert rt.rejoins == 2  # doubled: 60 s now
    rt.now += first
    await rt.checkpoint()
    assert rt.rejoins == 3


async def test_a_rejoin_that_cannot_be_asked_for_is_logged_and_asked_again() -> None:
    rt = MemoryRuntime(Counter, fenced=True)
    assert rt.fence is not None
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("the consumer's loop is closed")

    rt.driver.rejoin = broken
    await rt.assign([0])
    produce(rt, 0, 1)
    await rt.poll()
    rt.fence.take_over(0)
    await rt.checkpoint()  # does not raise: the checkpoint's own outcome stands
    assert calls == ["broken"]
    rt.driver.rejoin = lambda: calls.append("asked")
    await rt.checkpoint()
    assert calls == ["broken", "asked"]
