"""Cumulative log counters per event-time window."""

from __future__ import annotations

import itertools

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

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


RECORD = st.tuples(st.integers(0, 60_000), st.sampled_from(["INFO", "WARN", "ERROR"]),
                   st.integers(1, 4))  # fmt: skip


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(RECORD, max_size=40), st.lists(st.integers(0, 40), max_size=4))
def test_add_many_equals_add_one_at_a_time(
    recs: list[tuple[int, str, int]], cuts: list[int]
) -> None:
    """Any records cut into any batches: the same samples, in the same order, and the
    same state as adding them one by one."""
    one, many = ServiceCounts("api", 10_000), ServiceCounts("api", 10_000)
    expected = [emitted([s]) for r in recs for s in one.add(*r)]
    got = []
    bounds = sorted({0, len(recs), *(c for c in cuts if c < len(recs))})
    for a, b in itertools.pairwise(bounds):
        part = recs[a:b]
        got += [emitted([s]) for s in many.add_many(*(list(c) for c in zip(*part, strict=True)))]
    assert got == expected
    assert many.state() == one.state()
    assert many.add_many([], [], []) == []
