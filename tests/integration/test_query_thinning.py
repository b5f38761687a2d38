"""The store's thinned reads (``monitoring.query.thinning``) are ``SelectHint.keep`` in
SQL: on a chDB store (raw samples, 10 s and 1 min aggregates), a hinted ``select``
returns exactly the points a full ``select`` filtered by ``keep`` does, and the
engine's answers over both are bit-identical."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitoring.promql import Engine, Matcher, SelectHint, SeriesData
from monitoring.query.source import StoreSource

pytestmark = pytest.mark.no_broker

HOUR = 3_600_000


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, int]]:
    from monitoring.bench.query import build
    from monitoring.config import Settings
    from monitoring.sinks.clickhouse.connection import connect
    from monitoring.sinks.clickhouse.migrations import migrate

    path: Path = tmp_path_factory.mktemp("thinning")
    storage = Settings.load(None).storage.model_copy(update={"dsn": f"chdb://{path}/chdb"})
    client = connect(storage.dsn)
    migrate(client, storage)
    now_s = int(time.time()) // 60 * 60
    build(client, 130, 0.5, 15, now_s)
    # a sample stored twice in one millisecond (the larger value is later in key order)
    client.command(
        "INSERT INTO samples (series_id, ts, value) "
        f"VALUES (1, toDateTime64({now_s - 3600}, 3), 1e9)"
    )
    yield client, now_s * 1000
    client.close()


class Plain:
    """The store's source without the hint keyword (everything is fetched)."""

    def __init__(self, src: StoreSource) -> None:
        self.src = src

    def select(self, matchers: list[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        return self.src.select(matchers, start_ms, end_ms)


def _source(client: Any, now: int, step_ms: int) -> StoreSource:
    return StoreSource(client, None, step_ms=step_ms, now_ms=now)


HINTS = [
    (15_000, SelectHint(-5 * HOUR, -1 * HOUR, 3 * 60_000, 60_000, False)),  # raw, range
    (15_000, SelectHint(-5 * HOUR, -1 * HOUR, 11 * 60_000, 300_000, True)),  # raw, instant
    (15_000, SelectHint(-HOUR + 7_000, -HOUR + 7_000, 0, 300_000, True)),  # not thinned
    (120_000, SelectHint(-6 * HOUR, -HOUR, 20 * 60_000, 300_000, False)),  # 10 s windows
    (600_000, SelectHint(-8 * HOUR, 0, HOUR, 10 * 60_000, True)),  # 1 min windows, instant
    (600_000, SelectHint(-8 * HOUR, 0, HOUR, 20 * 60_000, False)),  # 1 min windows, range
]


@pytest.mark.parametrize(("step_ms", "rel"), HINTS)
@pytest.mark.parametrize("name", ["bench_requests_total", "bench_gauge"])
def test_a_hinted_select_is_keep_in_sql(
    store: tuple[Any, int], step_ms: int, rel: SelectHint, name: str
) -> None:
    client, now = store
    hint = SelectHint(rel.first_ms + now, rel.last_ms + now, rel.step_ms, rel.range_ms, rel.instant)
    matchers = [Matcher("__name__", "=", name)]
    lo, hi = hint.first_ms - hint.range_ms, hint.last_ms
    full = _source(client, now, step_ms).select(matchers, lo, hi)
    thin = _source(client, now, step_ms).select(matchers, lo, hi, hint=hint)
    assert len(full) == len(thin) > 0
    kept = 0
    for f, t in zip(full, thin, strict=True):
        keep = hint.keep(f.t_ms) if hint.thins() else np.ones(len(f.t_ms), bool)
        assert f.labels == t.labels
        assert np.array_equal(f.t_ms[keep], t.t_ms)
        assert np.array_equal(f.values[keep].view(np.uint64), t.values.view(np.uint64))
        kept += len(t.t_ms)
    total = sum(len(f.t_ms) for f in full)
    assert 0 < kept < total if hint.thins() else kept == total


QUERIES = [
    ("rate(bench_requests_total[1m])", 3_600_000),
    ("increase(bench_requests_total[5m] offset 7m)", 1_800_000),
    ("bench_gauge", 900_000),
    ("max_over_time(bench_gauge[2m])", 600_000),
    ("timestamp(bench_requests_total)", 120_000),
    ("max_over_time(rate(bench_requests_total[1m])[10m:1m])", 3_600_000),
    ("histogram_quantile(0.9, sum by (le) (rate(bench_latency_seconds_bucket[1m])))", 1_200_000),
]


@pytest.mark.parametrize(("query", "step_ms"), QUERIES)
def test_engine_answers_are_bit_identical(store: tuple[Any, int], query: str, step_ms: int) -> None:
    client, now = store
    start, end = now - 10 * HOUR + 7_000, now
    full = Engine().range(Plain(_source(client, now, step_ms)), query, start, end, step_ms)
    thin = Engine().range(_source(client, now, step_ms), query, start, end, step_ms)
    assert [s[0] for s in full.series] == [s[0] for s in thin.series]
    for (_, ta, va), (_, tb, vb) in zip(full.series, thin.series, strict=True):
        assert np.array_equal(ta, tb)
        assert np.array_equal(va.view(np.uint64), vb.view(np.uint64))
    instant = Engine().instant(_source(client, now, 0), query, now - 1_000)
    plain = Engine().instant(Plain(_source(client, now, 0)), query, now - 1_000)
    assert [(s[0], s[2].tobytes()) for s in instant.series] == [
        (s[0], s[2].tobytes()) for s in plain.series
    ]
