"""The agent runtime's protocol, in memory: checkpoint then ack, dead letters, idleness,
revocation, crashes and unreadable state, driven through ``runtime.memory``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from fixtures.agents import crash_plans, run_with_crashes
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.runtime.agent import Emit, Record, Records, StreamAgent
from monitoring.runtime.driver import RECONNECT_GRACE_S
from monitoring.runtime.memory import MemoryRuntime


class Summer(StreamAgent[dict[str, int]]):
    """Sums integers per partition; publishes the running sum after each message,
    keyed by the message's offset (so a replay rewrites the same key with the same
    value); idle: publishes ``closed``; ``boom`` raises."""

    name = "summer"
    sources = ("numbers",)
    state_topic = "summer.state"
    idle_timeout_s = 5.0

    def restore(self, partition: int, table: dict[bytes, bytes]) -> dict[str, int]:
        if table.get(b"garbage"):
            raise ValueError("not a state this agent wrote")
        total, is_open, offset = map(int, table.get(b"state", b"0,0,-1").split(b","))
        return {"sum": total, "open": is_open, "offset": offset, "dirty": 0}

    def snapshot(self, state: dict[str, int]) -> Records | None:
        if not state["dirty"]:
            return None
        state["dirty"] = 0  # one record: a checkpoint cut short leaves the old one or this
        return [(b"state", b"%d,%d,%d" % (state["sum"], state["open"], state["offset"]))]

    def handle(self, msg: Record, state: dict[str, int], out: Emit) -> int:
        if msg.offset <= state["offset"]:
            out.skip_replayed()
            return 0
        state["offset"], state["dirty"] = msg.offset, 1
        if msg.value == b"boom":
            raise RuntimeError("a bug")
        try:
            n = int(msg.value)
        except ValueError:
            out.dead_letter("not-a-number", repr(msg.value)[:50])
            return 0
        state["sum"] += n
        state["open"] = 1
        out.send("sums", str(msg.offset).encode(), str(state["sum"]).encode(), msg.partition)
        return 1

    def next_offset(self, state: dict[str, int], topic: str) -> int:
        return state["offset"] + 1

    def wants_idle(self, state: dict[str, int]) -> bool:
        return bool(state["open"])

    def idle(self, partition: int, state: dict[str, int], quiet: frozenset[str], out: Emit) -> bool:
        state["open"], state["dirty"] = 0, 1
        out.send("sums", b"closed", str(state["sum"]).encode(), partition)
        return True

    def health(self, states: Mapping[int, dict[str, int]]) -> dict[str, Any]:
        return {"total": sum(s["sum"] for s in states.values())}


def latest(rt: MemoryRuntime[Any]) -> dict[tuple[int | None, bytes | None], bytes | None]:
    """The sums topic as a compacted table: what a store keeping the latest row shows."""
    return {(r.partition, r.key): r.value for r in rt.records("sums")}


async def test_outputs_then_state_then_acks() -> None:
    rt = MemoryRuntime(Summer)
    for v in (b"1", b"2", b"3"):
        rt.produce("numbers", v)
    await rt.poll()
    assert rt.values("sums") == [] and rt.committed == {}  # nothing flushed yet
    rt.sink.flush_ok = False  # the broker is slow: no state written, nothing acked
    assert not await rt.checkpoint()
    assert rt.state(0) == {} and rt.committed == {}
    rt.sink.flush_ok = True
    assert await rt.checkpoint()
    assert rt.values("sums") == [b"1", b"3", b"6"]
    assert rt.state(0)[b"state"] == b"6,1,2" and rt.committed == {("numbers", 0): 3}
    assert rt.metric("agent_messages_total") == 3 and rt.metric("agent_items_total") == 3


async def test_bad_input_and_bugs_are_dead_lettered_and_the_stream_goes_on() -> None:
    rt = MemoryRuntime(Summer)
    for v in (b"1", b"x", b"boom", None, b"2"):
        rt.produce("numbers", v)
    await rt.run_until_idle()
    dead = {r.source.offset: r.reason for r in rt.dead_letters() if r.source}
    # None raises inside int(): an input the agent did not expect is a processing error
    assert dead == {1: "not-a-number", 2: "processing-error", 3: "processing-error"}
    assert rt.values("sums")[-1] == b"3"
    assert rt.metric("agent_dead_letters_total", reason="processing-error") == 2
    assert rt.committed == {("numbers", 0): 5}


async def test_idle_only_when_quiet_caught_up_and_the_broker_answers() -> None:
    rt = MemoryRuntime(Summer)
    rt.produce("numbers", b"5")
    await rt.poll()
    await rt.advance(4.9)
    assert b"closed" not in [r.key for r in rt.sink.pending]
    rt.produce("numbers", b"1")  # waiting to be read: not idle
    await rt.advance(0.2)
    assert b"closed" not in [r.key for r in rt.sink.pending]
    await rt.poll()
    rt.broker_up = False
    await rt.advance(10)
    assert rt.driver.health()["status"] == "unavailable"
    rt.broker_up = True
    await rt.advance(1)  # back: RECONNECT_GRACE_S (over the idle timeout) to catch up
    assert b"closed" not in [r.key for r in rt.sink.delivered + rt.sink.pending]
    await rt.advance(RECONNECT_GRACE_S - 1)
    assert b"closed" not in [r.key for r in rt.sink.delivered + rt.sink.pending]
    await rt.advance(1)
    assert rt.records("sums")[-1].key == b"closed"  # idle() asked for a checkpoint: flushed
    assert rt.committed == {("numbers", 0): 2} and rt.driver.health()["total"] == 6


async def test_revoke_checkpoints_first_so_the_next_owner_replays_nothing() -> None:
    rt = MemoryRuntime(Summer)
    for p in (0, 1):
        rt.produce("numbers", b"1", partition=p)
    await rt.poll()
    await rt.revoke([1])
    assert rt.committed == {("numbers", 0): 1, ("numbers", 1): 1}
    assert sorted(rt.driver.view()) == [0]
    await rt.assign([1])
    rt.produce("numbers", b"2", partition=1)
    await rt.run_until_idle()
    assert rt.metric("agent_replayed_messages_total") == 0
    assert latest(rt)[(1, b"1")] == b"3"


async def test_unreadable_state_starts_the_partition_afresh_and_is_counted() -> None:
    rt = MemoryRuntime(Summer)
    rt.tables[0] = {b"garbage": b"\x00\xff"}
    rt.produce("numbers", b"4")
    await rt.run_until_idle()
    assert rt.values("sums") == [b"4"]
    assert rt.metric("agent_state_unreadable_total") == 1


@pytest.mark.parametrize("flush", [1, 2])
async def test_a_crash_inside_a_checkpoint_loses_no_output(flush: int) -> None:
    """The state reaches the broker while the outputs it covers do not: only if the
    outputs are not flushed first. Then the restart skips their messages for good."""
    rt = MemoryRuntime(Summer)
    for v in (b"1", b"2"):
        rt.produce("numbers", v)
    await rt.poll()
    await rt.crash_in_checkpoint(flush, [0, 1])  # no output, one state record
    await rt.run_until_idle()
    assert latest(rt) == {(0, b"0"): b"1", (0, b"1"): b"3"}


@settings(max_examples=examples(60), deadline=None)
@given(
    values=st.lists(st.integers(-5, 5), min_size=1, max_size=30),
    cuts=crash_plans(30, 40, min_size=0),
)
async def test_a_crash_anywhere_changes_no_result(
    values: list[int], cuts: list[tuple[int, list[int], int]]
) -> None:
    """Crash after any message, with any part of the unflushed records delivered, with
    or without a checkpoint before: the latest value of every key is that of a run
    without crashes, and a key written twice is written with the same value."""
    clean = MemoryRuntime(Summer)
    for v in values:
        clean.produce("numbers", str(v).encode())
    await clean.run_until_idle()

    rt = MemoryRuntime(Summer)
    for v in values:
        rt.produce("numbers", str(v).encode())
    await run_with_crashes(rt, cuts)
    await rt.run_until_idle()
    assert latest(rt) == latest(clean)
    seen: dict[Any, Any] = {}
    for r in rt.records("sums"):
        assert seen.setdefault(r.key, r.value) == r.value


@pytest.mark.parametrize("flush_ok", [True, False])
async def test_shutdown_writes_the_state_without_acks(flush_ok: bool) -> None:
    rt = MemoryRuntime(Summer)
    rt.produce("numbers", b"7")
    await rt.poll()
    rt.sink.flush_ok = flush_ok
    await rt.driver.shutdown()
    assert rt.committed == {}
    assert (rt.state(0).get(b"state") == b"7,1,0") is flush_ok
