"""``BulkConsumer._deliver`` without a broker: which fetched messages reach the
handler around a rebalance (the real consumer is tested in
tests/integration/test_bulk.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from monitoring.runtime.bulk import (
    MAX_RUN,
    MAX_RUN_BYTES,
    BulkConsumer,
    interleave,
    offset_gaps,
    split_runs,
)


def message(offset: int, generation: int, partition: int = 0) -> Any:
    return SimpleNamespace(
        offset=offset, generation_id=generation, tp=TP("samples", partition), value=b""
    )


def deliver(run: list[Any], generation: int, flow_active: bool = True) -> list[Any]:
    got: list[Any] = []

    async def handler(messages: list[Any]) -> None:
        got.extend(messages)

    app = SimpleNamespace(
        consumer_generation_id=generation,
        monitor=SimpleNamespace(stream_inbound_time={}),
        bulk_handlers={"samples": handler},
    )
    consumer = SimpleNamespace(app=app, flow_active=flow_active)
    asyncio.run(BulkConsumer._deliver(consumer, "samples", run))  # type: ignore[arg-type]
    if got:
        assert set(app.monitor.stream_inbound_time) == {m.tp for m in got}
    return got


def test_a_run_of_the_current_generation_is_delivered_whole_and_in_order() -> None:
    run = [message(i, 3, partition=i % 2) for i in range(10)]
    assert deliver(list(run), generation=3) == run


def test_messages_fetched_before_a_rebalance_are_left_to_be_fetched_again() -> None:
    """Faust's seek after the rebalance fetches the older generation's messages again;
    those fetched after it (the new generation) must be delivered, not dropped."""
    old = [message(i, 3) for i in range(5)]
    new = [message(i, 4) for i in range(5)]
    assert deliver(old + new, generation=4) == new
    assert deliver(list(old), generation=4) == []


def test_nothing_is_delivered_while_the_flow_is_stopped() -> None:
    assert deliver([message(0, 4)], generation=4, flow_active=False) == []


def test_runs_are_cut_by_count_and_bytes_in_order() -> None:
    small = [SimpleNamespace(value=b"x" * 10) for _ in range(MAX_RUN * 2 + 5)]
    runs = split_runs(small)  # type: ignore[arg-type]
    assert [len(r) for r in runs] == [MAX_RUN, MAX_RUN, 5]
    assert [m for r in runs for m in r] == small
    big = [SimpleNamespace(value=b"x" * (MAX_RUN_BYTES // 3 + 1)) for _ in range(7)]
    assert [len(r) for r in split_runs(big)] == [3, 3, 1]  # type: ignore[arg-type]
    huge = [SimpleNamespace(value=b"x" * MAX_RUN_BYTES * 2), SimpleNamespace(value=None)]
    assert [len(r) for r in split_runs(huge)] == [1, 1]  # type: ignore[arg-type]
    assert split_runs([]) == []


def test_partitions_take_turns_each_in_its_own_order() -> None:
    a = [message(i, 1, partition=0) for i in range(3)]
    b = [message(i, 1, partition=1) for i in range(1)]
    c = [message(i, 1, partition=2) for i in range(2)]
    assert interleave([a, b, c]) == [a[0], b[0], c[0], a[1], c[1], a[2]]
    assert interleave([a]) == a


def test_offset_gaps_as_faust_records_them() -> None:
    assert offset_gaps(None, [0, 1, 2]) == []
    assert offset_gaps(4, [5, 6, 9, 10, 13]) == [(7, 9), (11, 13)]
    assert offset_gaps(4, [8]) == [(5, 8)]
    assert offset_gaps(0, [5]) == []  # Faust skips a read offset of 0 too
