"""Services per logs partition are bounded (issue 13, finding 13): a record of a new
service beyond ``logs.max_services`` is refused with reason ``cardinality`` and makes
no state, in the single-record and the batch path, before and after a restore."""

from __future__ import annotations

import pytest

from monitoring.config import Settings
from monitoring.logs.analyzer import PartitionLogs
from monitoring.logs.batch import LogColumns
from monitoring.logs.records import InvalidLog

T = 1_700_000_000_000


def record(service: str) -> dict[str, object]:
    return {"timestamp_ms": T, "service": service, "level": "info", "message": "started in 3 s"}


def batch(service: str, lines: int = 3) -> LogColumns:
    return LogColumns(service, "h", [T] * lines, ["info"] * lines, [""] * lines,
                      [f"request {i} done" for i in range(lines)], [""] * lines, [""] * lines,
                      [""] * lines, {})  # fmt: skip


def test_a_new_service_beyond_the_limit_is_refused_and_makes_no_state() -> None:
    p = PartitionLogs(max_services=3)
    for offset, name in enumerate(["a", "b"]):
        assert p.process(offset, record(name), T) is not None
    assert p.process_batch(2, batch("c"), T).stored is not None  # type: ignore[union-attr]
    with pytest.raises(InvalidLog) as e:
        p.process(3, record("d"), T)
    assert e.value.reason == "cardinality" and "logs.max_services" in str(e.value)
    out = p.process_batch(4, batch("e"), T)
    assert out is not None and out.stored is None and not out.samples and not out.events
    assert [(i, err.reason) for i, err in out.rejected] == [(i, "cardinality") for i in range(3)]
    assert sorted(p.services) == ["a", "b", "c"]
    assert p.process(5, record("a"), T) is not None  # known services go on
    assert p.process_batch(6, batch("c"), T) is not None
    records, meta = p.checkpoint()
    table = {k: v for k, v in records if v is not None}
    again = PartitionLogs(max_services=3)
    again.restore(meta, table.items())
    with pytest.raises(InvalidLog, match="cardinality"):
        again.process(7, record("f"), T)
    assert sorted(again.services) == ["a", "b", "c"]


def test_many_new_services_cost_the_bound() -> None:
    p = PartitionLogs(max_services=10)
    refused = 0
    for i in range(100_000):
        try:
            p.process(i, record(f"svc-{i}"), T)
        except InvalidLog:
            refused += 1
    assert len(p.services) == 10 and refused == 100_000 - 10


def test_the_limit_is_a_setting() -> None:
    assert Settings.load(None).logs.max_services == 1000
    assert PartitionLogs().max_services == 1000
