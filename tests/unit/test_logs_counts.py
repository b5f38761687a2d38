"""Cumulative log counters per event-time window."""

from __future__ import annotations

from monitoring.logs.counts import ServiceCounts


def emitted(samples: list) -> list[tuple[str, int, float, str]]:  # type: ignore[type-arg]
    return [(s.series, s.timestamp_ms, s.value, s.kind) for s in samples]


def test_windows_emit_changed_series_cumulatively() -> None:
    c = ServiceCounts("api", 10_000)
    assert c.add(1_000, "INFO", 1) == []
    assert c.add(9_999, "INFO", 1) == []
    out = c.add(10_000, "ERROR", 2)
    assert emitted(out) == [
        ('log_events_total{level="INFO",service="api"}', 9_999, 2.0, "COUNTER"),
        ('log_template_events_total{service="api",template_id="1"}', 9_999, 2.0, "COUNTER"),
    ]
    c.add(3_000, "INFO", 1)  # late: counts in the next emission
    out = c.add(35_000, "INFO", 1)
    assert emitted(out) == [
        ('log_events_total{level="ERROR",service="api"}', 19_999, 1.0, "COUNTER"),
        ('log_events_total{level="INFO",service="api"}', 19_999, 3.0, "COUNTER"),
        ('log_template_events_total{service="api",template_id="1"}', 19_999, 3.0, "COUNTER"),
        ('log_template_events_total{service="api",template_id="2"}', 19_999, 1.0, "COUNTER"),
    ]


def test_close_emits_the_open_window_and_moves_on() -> None:
    c = ServiceCounts("api", 10_000)
    assert c.close() == []
    c.add(1_000, "WARN", 4)
    assert [s.timestamp_ms for s in c.close()] == [9_999, 9_999]
    assert c.close() == []  # nothing new
    c.add(5_000, "WARN", 4)  # inside the closed window: next emission
    assert emitted(c.add(21_000, "WARN", 4))[0] == (
        'log_events_total{level="WARN",service="api"}',
        19_999,
        2.0,
        "COUNTER",
    )


def test_state_round_trip() -> None:
    c = ServiceCounts("s", 1_000)
    for t in (10, 20, 1_500):
        c.add(t, "INFO", 3)
    d = ServiceCounts.from_state("s", 1_000, c.state())
    assert emitted(d.add(5_000, "INFO", 3)) == emitted(c.add(5_000, "INFO", 3))
