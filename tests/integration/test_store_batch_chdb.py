"""MetricBatch through the store's columnar path and through its per-sample path, into
a real embedded ClickHouse (chDB): the same rows come back."""

from __future__ import annotations

import math
import time
from typing import Any

from fixtures.store import StoreMessage
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.dev.loadgen import generate
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec
from monitoring.wire.sample_encoding import BatchEncoder, SampleEncoder, SeriesRef, make_series

CODEC = AvroCodec.from_directory()
NOW = int(time.time() * 1000) // 10_000 * 10_000


def messages() -> tuple[list[StoreMessage], int]:
    """Loadgen batches (late samples, a replayed batch, bad points, a bad series key,
    a cut body) and single samples between them; and how many samples are valid."""
    refs: dict[tuple[str, tuple[tuple[str, str], ...]], SeriesRef] = {}
    batches, samples = BatchEncoder(CODEC), SampleEncoder(CODEC)
    out: list[StoreMessage] = []
    valid = 0
    ticks = generate(150, NOW - 600_000, 10_000, seed=3, ticks=40, late_fraction=0.1)
    for t, tick in enumerate(ticks):
        items = []
        for g in tick:
            key = (g.name, tuple(g.labels.items()))
            ref = refs.get(key) or refs.setdefault(key, make_series(g.name, g.labels, g.kind,
                                                                    g.unit))  # fmt: skip
            items.append((ref, g.timestamp_ms, g.value))
        if t % 7 == 3:  # a few bad points in the batch
            items[1] = (items[1][0], items[1][1], math.nan)
            items[2] = (items[2][0], 5, items[2][2])
        valid += sum(1 for _, ts, v in items if ts > 5 and math.isfinite(v))
        out.append(StoreMessage(batches.encode(items, "loadgen"), NOW))
        if t % 5 == 0:  # a MetricSample of a series new to the store, between batches
            ref = make_series("single_gauge", {"t": str(t)}, "GAUGE", "ratio")
            out.append(StoreMessage(samples.encode(ref, NOW - 1_000 + t, 0.25 * t), NOW))
            valid += 1
    out.append(out[5])  # a batch replayed: its rows twice, FINAL keeps one of each
    bad_key = {"source": "t", "series": ['x{b="1",a="2"}', "ok"], "kinds": [], "units": [],
               "series_index": [0, 1], "timestamps_ms": [NOW, NOW],
               "values": [1.0, 2.0]}  # fmt: skip
    out.append(StoreMessage(CODEC.encode("monitoring.MetricBatch", bad_key), NOW))
    valid += 1
    out.append(StoreMessage(out[0].value()[:-5], NOW))  # truncated
    return out, valid


def store_all(
    chdb_settings: Settings, chdb_client: Any, msgs: list[StoreMessage], columnar: bool
) -> Store:
    store = Store(
        chdb_settings, Writer(chdb_client, StoreMetrics(CollectorRegistry())), None, CODEC
    )
    if not columnar:  # today's path: fastavro and a Sample per row
        store.batch_decoder.accepts = lambda data: False  # type: ignore[method-assign]
    for i, m in enumerate(msgs):
        store.handle(m)
        if i % 9 == 8:
            if columnar:
                assert store.writer.samples.chunk_rows > 0  # batches went in as columns
            store.flush_and_commit()
    store.flush_and_commit()
    return store


def snapshot(chdb_client: Any) -> dict[str, list[tuple[Any, ...]]]:
    queries = {
        "samples": "SELECT series_id, toUnixTimestamp64Milli(ts), value FROM samples "
                   "ORDER BY series_id, ts, value",
        "samples_final": "SELECT series_id, toUnixTimestamp64Milli(ts), value "
                         "FROM samples FINAL ORDER BY series_id, ts",
        "series": "SELECT series_id, series, name, labels, kind, unit, "
                  "toUnixTimestamp64Milli(first_seen), toUnixTimestamp64Milli(last_seen) "
                  "FROM series ORDER BY series_id, first_seen, last_seen",
        "series_final": "SELECT series_id, series, name, labels, kind, unit, "
                        "toUnixTimestamp64Milli(first_seen), toUnixTimestamp64Milli(last_seen) "
                        "FROM series FINAL ORDER BY series_id",
    }  # fmt: skip
    return {k: [tuple(r) for r in chdb_client.query(q).result_rows] for k, q in queries.items()}


def invalid(store: Store) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for m in store.metrics.invalid.collect()
        for s in m.samples
        if s.name.endswith("_total")
    }


def test_columnar_batches_store_the_rows_of_the_sample_path(
    chdb_client: Any, chdb_settings: Settings
) -> None:
    msgs, valid = messages()
    # the replayed batch must stay a duplicate until the snapshot: no background merge
    chdb_client.command("SYSTEM STOP MERGES samples")
    old = store_all(chdb_settings, chdb_client, msgs, columnar=False)
    before = snapshot(chdb_client)
    chdb_client.command("TRUNCATE TABLE samples")
    chdb_client.command("TRUNCATE TABLE series")
    new = store_all(chdb_settings, chdb_client, msgs, columnar=True)
    after = snapshot(chdb_client)
    assert len(before["samples_final"]) == valid  # independent count of valid samples
    assert len(before["samples"]) > valid  # the replayed batch is there twice
    assert len(before["series_final"]) == len(before["series"]) > 150  # a row per series
    assert after == before
    # the cut body: fastavro reads past the end ("bad-body"), the new decoder sees it end
    old_invalid, new_invalid = invalid(old), invalid(new)
    assert old_invalid.pop("bad-body") == 1 and new_invalid.pop("truncated") == 1
    assert new_invalid == old_invalid
    assert new_invalid == {"non-finite-value": 6, "timestamp-too-old": 6, "bad-series-key": 1}
