"""The load generator: deterministic, realistic, every sample once even when late."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import islice

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.dev.loadgen import GeneratedSample, generate
from monitoring.metrics.samples import Limits, check_series, series_key

T0 = 1_700_000_000_000


def run(n: int, ticks: int, seed: int = 1, **kw: float) -> list[list[GeneratedSample]]:
    return list(generate(n, T0, 1000, seed, ticks=ticks, **kw))  # type: ignore[arg-type]


def test_same_seed_same_samples_other_seed_other_values() -> None:
    assert run(150, 20) == run(150, 20)
    a, b = run(150, 20, seed=1), run(150, 20, seed=2)
    assert [[(s.name, s.labels) for s in t] for t in a] == [
        [(s.name, s.labels) for s in t] for t in b
    ]
    assert [s.value for t in a for s in t] != [s.value for t in b for s in t]


@settings(max_examples=examples(40), deadline=None)
@given(st.integers(1, 600))
def test_exactly_n_distinct_valid_series_per_tick(n: int) -> None:
    ticks = run(n, 2)
    for tick in ticks:
        assert len(tick) == n
        assert len({series_key(s.name, s.labels) for s in tick}) == n
    for s in ticks[0]:
        check_series(s.name, s.labels, Limits())
        assert s.kind in {"GAUGE", "COUNTER", "HISTOGRAM_BUCKET"}
        assert math.isfinite(s.value)


def test_values_are_realistic() -> None:
    ticks = run(400, 120, counter_reset_prob=0.0)
    by_series: dict[str, list[GeneratedSample]] = defaultdict(list)
    for t, tick in enumerate(ticks):
        for s in tick:
            assert s.timestamp_ms == T0 + t * 1000
            by_series[series_key(s.name, s.labels)].append(s)
    names = Counter(s.name for s in ticks[0])
    for family in (
        "node_cpu_usage_percent",
        "node_memory_used_bytes",
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "model_inference_latency_ms",
        "model_prediction_confidence",
        "orders_total",
    ):
        assert names[family] > 0, family
    for series in by_series.values():
        values = [s.value for s in series]
        name = series[0].name
        if name == "node_cpu_usage_percent":
            assert all(0 <= v <= 100 and round(v, 2) == v for v in values)
            assert len(set(values)) > 10  # it moves
        elif name == "node_memory_used_bytes":
            assert all(v == int(v) and v > 0 for v in values)
        elif series[0].kind in ("COUNTER", "HISTOGRAM_BUCKET"):
            assert values == sorted(values)  # no resets asked for: never decreases
        elif name == "model_prediction_confidence":
            assert all(0 <= v <= 1 for v in values)
        elif name == "model_inference_latency_ms":
            assert all(v > 0 for v in values)
    assert by_series['http_requests_total{route="/",service="api",status="200"}'][-1].value > 1000


def test_histogram_buckets_are_cumulative_and_count_matches_inf() -> None:
    for tick in run(200, 30):
        groups: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        for s in tick:
            if s.name.startswith("http_request_duration_seconds"):
                key = (s.labels["service"], s.labels["route"])
                suffix = s.labels.get("le", s.name.rsplit("_", 1)[1])
                groups[key][suffix] = s.value
        assert groups
        for g in groups.values():
            les = sorted((float(k), v) for k, v in g.items() if k not in ("sum", "count"))
            assert [v for _, v in les] == sorted(v for _, v in les)
            assert g["+Inf"] == g["count"]
            assert g["sum"] >= 0


def test_late_samples_arrive_later_with_their_event_time_and_none_is_lost() -> None:
    on_time = run(100, 30)
    late = run(100, 30, late_fraction=0.2, max_late_ticks=4)
    flat_on_time = sorted(
        (s.timestamp_ms, series_key(s.name, s.labels), s.value) for t in on_time for s in t
    )
    flat_late = [(s.timestamp_ms, series_key(s.name, s.labels), s.value) for t in late for s in t]
    assert sorted(flat_late) == flat_on_time  # same samples and values, each once
    delays = [T0 + i * 1000 - s.timestamp_ms for i, t in enumerate(late) for s in t]
    assert 0.15 < sum(d > 0 for d in delays) / len(delays) < 0.25
    assert min(delays) >= 0
    # held 1..4 ticks; what is still held at the last tick comes with it
    assert max(T0 + i * 1000 - s.timestamp_ms for i, t in enumerate(late[:-1]) for s in t) <= 4000


def test_infinite_and_bad_arguments() -> None:
    assert len(list(islice(generate(5, T0, 10, 0), 1000))) == 1000
    with pytest.raises(ValueError):
        next(generate(0, T0))
    with pytest.raises(ValueError):
        next(generate(5, T0, late_fraction=2))
