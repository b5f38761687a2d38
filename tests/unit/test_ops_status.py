"""The status's pure parts: heartbeat records (and the garbage a status topic may hold),
lag arithmetic, the verdict's rules and the exported series."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitoring.ops.checks import Status, exit_code
from monitoring.ops.status import (
    MAX_HEARTBEAT_BYTES,
    Heartbeat,
    InvalidHeartbeat,
    LagRow,
    StatusLimits,
    StatusReport,
    figures_from_health,
    judge,
    lag_of,
    parse_heartbeat,
    series_of,
)

NOW = 1_800_000_000_000
LIMITS = StatusLimits(stale_after_ms=30_000, max_lag=100, max_close_delay_ms=60_000)


def hb(kind: str = "worker", pid: int = 1, age_s: float = 1, **kw: Any) -> Heartbeat:
    fields: dict[str, Any] = {
        "kind": kind,
        "id": f"{kind}@h:{pid}",
        "host": "h",
        "pid": pid,
        "version": "0.1.0",
        "started_ms": NOW - 3_600_000,
        "sent_ms": int(NOW - age_s * 1000),
        "interval_ms": 5000,
        "ready": True,
        **kw,
    }
    return Heartbeat(**fields)


def by_name(results: list[Any]) -> dict[str, Any]:
    return {r.name: r for r in results}


def test_a_heartbeat_round_trips_and_stays_bounded() -> None:
    h = hb(reasons=("restoring state",), figures={"aggregation.closed_through_ms": {"0": 5}})
    assert parse_heartbeat(h.id.encode(), h.to_bytes()) == h
    huge = hb(figures={f"k{i}": "x" * 200 for i in range(200)})
    data = huge.to_bytes()
    assert len(data) <= MAX_HEARTBEAT_BYTES
    assert parse_heartbeat(huge.id.encode(), data).figures == {"dropped": "over the size bound"}


GOOD = json.loads(hb().to_bytes())


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"worker@h:1", None, "tombstone"),
        (b"worker@h:1", b"\xff\xfe not json", "not-json"),
        (b"worker@h:1", b"[1, 2]", "not-an-object"),
        (b"worker@h:1", b"{" + b" " * MAX_HEARTBEAT_BYTES + b"}", "oversized"),
        (b"worker@h:1", json.dumps({**GOOD, "v": 2}).encode(), "unknown-version"),
        (b"other", json.dumps(GOOD).encode(), "key-mismatch"),
        (None, json.dumps(GOOD).encode(), "key-mismatch"),
        (b"worker@h:1", json.dumps({**GOOD, "pid": "1"}).encode(), "bad-field"),
        (b"worker@h:1", json.dumps({**GOOD, "pid": -1}).encode(), "bad-field"),
        (b"worker@h:1", json.dumps({**GOOD, "ready": "yes"}).encode(), "bad-field"),
        (b"worker@h:1", json.dumps({**GOOD, "kind": "Bad Kind!"}).encode(), "bad-field"),
        (b"worker@h:1", json.dumps({**GOOD, "reasons": [1]}).encode(), "bad-field"),
        (b"worker@h:1", json.dumps({**GOOD, "figures": []}).encode(), "bad-field"),
        (b"worker@h:1", json.dumps({**GOOD, "sent_ms": 1e300}).encode(), "bad-field"),
    ],
)
def test_garbage_is_refused_with_a_reason(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidHeartbeat) as e:
        parse_heartbeat(key, value)
    assert e.value.reason == reason


def test_hostile_figures_and_reasons_are_cut_to_shape() -> None:
    evil = {
        **GOOD,
        "reasons": ["r" * 400] * 30,
        "figures": {f"f{i}": {"deep": {"deeper": [1] * 100}} for i in range(5)},
    }
    got = parse_heartbeat(b"worker@h:1", json.dumps(evil).encode())
    assert len(got.reasons) == 21 and all(len(r) <= 300 for r in got.reasons)
    assert all(isinstance(v, dict) for v in got.figures.values())
    assert all(isinstance(x, str | None) for v in got.figures.values() for x in v.values())


def test_figures_keep_the_known_fields_only() -> None:
    health = {
        "status": "ok",
        "last_error": "password=hunter2",  # not a figure: never published
        "pending_rows": 12,
        "aggregation": {"closed_through_ms": {0: 10_000, 1: 20_000}, "series": 3},
        "logs": {"not_a_figure": 1},
    }
    assert figures_from_health(health) == {
        "status": "ok",
        "pending_rows": 12,
        "aggregation.closed_through_ms": {"0": 10_000, "1": 20_000},
        "aggregation.series": 3,
    }


def test_lag_from_the_commit_or_the_log_start() -> None:
    assert lag_of(committed=40, low=0, high=100) == 60
    assert lag_of(committed=None, low=30, high=100) == 70  # never committed: from the start
    assert lag_of(committed=10, low=30, high=100) == 70  # the commit expired
    assert lag_of(committed=100, low=0, high=100) == 0


def test_all_well_is_ok_and_exits_zero() -> None:
    report = StatusReport(
        NOW,
        heartbeats=[
            hb("worker", figures={"aggregation.closed_through_ms": {"0": NOW - 5_000}}),
            hb("store", figures={"status": "ok", "pending_rows": 7}),
            hb("evaluator", figures={"last_evaluated_ms": NOW - 20_000}),
            hb("notifier", figures={"failing_receivers": [], "deliveries_in_flight": 0}),
        ],
        lag=[LagRow("g", "t", 0, 5, 10, 5)],
    )
    results = judge(report, LIMITS)
    assert {r.status for r in results} == {Status.OK}, results
    assert by_name(results)["alerting"].detail == "last end evaluated 20 s ago"
    assert exit_code(results) == 0


def test_a_stale_heartbeat_fails_unless_the_process_was_restarted() -> None:
    dead = hb("worker", pid=1, age_s=120)
    report = StatusReport(NOW, heartbeats=[dead, hb("store", pid=2)])
    assert by_name(judge(report, LIMITS))["processes"].status is Status.FAIL
    assert "worker@h:1" in by_name(judge(report, LIMITS))["processes"].detail
    # the same kind on the same host, started after the dead one was last heard of
    again = hb("worker", pid=3, started_ms=dead.sent_ms + 1_000)
    report = StatusReport(NOW, heartbeats=[dead, again, hb("store", pid=2)])
    assert by_name(judge(report, LIMITS))["processes"].status is Status.OK
    assert [h.id for h in report.live()] == ["worker@h:3", "store@h:2"]


def test_each_rule_fails_or_warns() -> None:
    report = StatusReport(
        NOW,
        heartbeats=[
            hb("worker", figures={"aggregation.closed_through_ms": {"0": NOW - 120_000}}),
            hb("store", figures={"status": "degraded"}),
            hb("evaluator", ready=False, reasons=("catching up a backlog: partitions 0",)),
            hb("notifier", figures={"failing_receivers": ["ops"], "deliveries_in_flight": 2}),
        ],
        skipped={"not-json": 2},
        lag=[LagRow("g", "t", 0, 0, 500, 500)],
        dead_letters={"bad-marker": 3},
        dead_letters_recent=1,
        errors=["dead letters: no broker"],
    )
    got = {name: r.status for name, r in by_name(judge(report, LIMITS)).items()}
    assert got == {
        "processes": Status.OK,
        "ready": Status.WARN,
        "status topic": Status.WARN,
        "lag": Status.FAIL,
        "store": Status.FAIL,
        "windows": Status.FAIL,
        "alerting": Status.WARN,
        "notifier": Status.WARN,
        "dead letters": Status.WARN,
        "gathering": Status.FAIL,
    }
    assert by_name(judge(StatusReport(NOW), LIMITS))["processes"].status is Status.FAIL


def test_series_of_a_report() -> None:
    report = StatusReport(
        NOW,
        heartbeats=[
            hb("worker", figures={"aggregation.closed_through_ms": {"2": NOW - 30_000}}),
            hb("store", pid=2, age_s=100, figures={"status": "ok", "pending_rows": 4}),
            hb("notifier", pid=3, figures={"deliveries_in_flight": 2, "failing_receivers": ["a"]}),
            hb("evaluator", pid=4, figures={"last_evaluated_ms": NOW - 10_000}),
        ],
        lag=[LagRow("monitoring.worker", "monitoring.metrics.samples", 1, 5, 9, 4)],
        dead_letters={"bad-marker": 3},
    )
    got = {(n, tuple(sorted(lb.items()))): (v, k) for n, lb, v, k in series_of(report, LIMITS, 11)}
    lag_key = (
        "kafka_consumergroup_lag",
        (("consumergroup", "monitoring.worker"), ("partition", "1"),
         ("topic", "monitoring.metrics.samples")),
    )  # fmt: skip
    assert got[lag_key] == (4.0, "GAUGE")
    assert got[("monitoring_dead_letters_total", ())] == (11.0, "COUNTER")
    assert got[("monitoring_dead_letters_last_hour", (("reason", "bad-marker"),))][0] == 3.0
    store = (("kind", "store"), ("process", "store@h:2"))
    assert got[("monitoring_process_up", store)][0] == 0.0  # stale
    assert got[("monitoring_store_ok", (("process", "store@h:2"),))][0] == 0.0  # stale: not ok
    assert got[("monitoring_close_delay_seconds", (("partition", "2"),))][0] == 30.0
    assert got[("monitoring_notifier_failing_receivers", (("process", "notifier@h:3"),))][0] == 1
    last = ("monitoring_alerting_last_evaluated_seconds", (("process", "evaluator@h:4"),))
    assert got[last][0] == (NOW - 10_000) / 1000


def test_closed_through_skips_partition_keys_that_are_not_ascii_numbers() -> None:
    marks = {"\u00b2": NOW, "\u0661": NOW, "-1": NOW, "1": NOW - 5_000}  # "²".isdigit() is true
    report = StatusReport(
        NOW, heartbeats=[hb("worker", figures={"aggregation.closed_through_ms": marks})]
    )
    assert report.closed_through() == {1: NOW - 5_000}
