"""The store's columnar MetricBatch path against its per-sample path: the same rows,
in the same order, the same counts of rejected samples (no ClickHouse, no Kafka)."""

from __future__ import annotations

import math
import struct
import time
from typing import Any

import numpy as np
import pytest
from fixtures.hypothesis_profiles import examples
from fixtures.store import StoreMessage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.metrics.samples import (
    BATCH,
    SAMPLE,
    InvalidSample,
    SampleBatch,
    SampleDecoder,
    SeriesInfo,
)
from monitoring.sinks.clickhouse.rows import (
    SAMPLE_COLUMNS,
    SERIES_COLUMNS,
    Columns,
    SampleColumns,
    SeriesIds,
    add_sample_batch,
    add_samples,
    series_id,
)
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
KINDS = ("GAUGE", "COUNTER", "HISTOGRAM_BUCKET", "SUMMARY", "UNTYPED")
NOW = int(time.time() * 1000)
HOUR = 3_600_000
# valid keys, and keys the store rejects (bad name, unsorted labels, reserved label)
KEYS = ('up', 'up{job="api"}', 'cpu{core="0",host="a"}', 'cpu{core="1",host="a"}',
        'lat{q="\\"x\\""}', 'bad name', 'cpu{host="a",core="0"}', 'm{__x="1"}')  # fmt: skip
STAMPS = st.one_of(
    st.integers(NOW - 30 * 86_400_000, NOW + HOUR // 2),  # accepted
    st.sampled_from([NOW - 30 * 365 * 86_400_000, 0, NOW + 2 * HOUR]),  # too old, future
)
VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, math.nan, math.inf, -math.inf]),
)


@st.composite
def batch_records(draw: Any) -> dict[str, Any]:
    """A MetricBatch record: repeated keys, optional kinds and units, bad points."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=6))
    n = draw(st.integers(0, 40))
    return {
        "source": "t",
        "series": keys,
        "kinds": draw(st.one_of(st.just([]), st.lists(st.sampled_from(KINDS),
                                                      min_size=len(keys), max_size=len(keys)))),
        "units": draw(st.one_of(st.just([]), st.lists(st.sampled_from(["", "bytes", "s"]),
                                                      min_size=len(keys), max_size=len(keys)))),
        "series_index": draw(st.lists(st.integers(0, len(keys) - 1), min_size=n, max_size=n)),
        "timestamps_ms": draw(st.lists(STAMPS, min_size=n, max_size=n)),
        "values": draw(st.lists(VALUES, min_size=n, max_size=n)),
    }  # fmt: skip


sample_records = st.fixed_dictionaries(
    {
        "name": st.sampled_from(["up", "cpu", "bad name"]),
        "labels": st.sampled_from([{}, {"host": "a", "core": "0"}, {"job": "api"}]),
        "timestamp_ms": STAMPS,
        "value": VALUES,
        "kind": st.sampled_from(KINDS),
        "unit": st.sampled_from(["", "bytes"]),
        "source": st.just(""),
    }
)
# a run of messages: ("batch", record), ("sample", record) or ("flush", None)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("batch"), batch_records()),
        st.tuples(st.just("sample"), sample_records),
        st.tuples(st.just("flush"), st.none()),
    ),
    max_size=12,
)


def as_arrays(rec: dict[str, Any]) -> dict[str, Any]:
    """The record as ``MetricBatchDecoder`` gives it (numpy arrays)."""
    return {**rec, "series_index": np.array(rec["series_index"], np.int64),
            "timestamps_ms": np.array(rec["timestamps_ms"], np.int64),
            "values": np.array(rec["values"], np.float64)}  # fmt: skip


def plain(column: Any) -> list[Any]:
    return column.tolist() if isinstance(column, np.ndarray) else list(column)


def bits(values: Any) -> list[int]:
    """Float64 bit patterns (tell -0.0 from 0.0)."""
    return [struct.unpack("<Q", struct.pack("<d", v))[0] for v in plain(values)]


def assert_same_samples(old: Columns, new: SampleColumns) -> None:
    """``new.columns()`` holds the rows of ``old.data``, with insertable types."""
    (o_sid, o_ts, o_val), (n_sid, n_ts, n_val) = old.data, new.columns()
    assert len(new) == len(old)
    assert plain(n_sid) == o_sid and n_ts == o_ts and bits(n_val) == bits(o_val)
    assert all(type(t) is int for t in n_ts)  # clickhouse-connect's DateTime64 takes ints
    if isinstance(n_sid, np.ndarray):
        assert n_sid.dtype == np.uint64 and n_val.dtype == np.float64


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_batch_path_gives_the_rows_of_the_sample_path(ops: list[tuple[str, Any]]) -> None:
    old_dec, new_dec = SampleDecoder(), SampleDecoder()
    old_ids, new_ids = SeriesIds(), SeriesIds()
    old, new = Columns(SAMPLE_COLUMNS), SampleColumns()
    old_series, new_series = Columns(SERIES_COLUMNS), Columns(SERIES_COLUMNS)
    for kind, rec in ops:
        if kind == "flush":
            assert_same_samples(old, new)
            assert new_series.data == old_series.data
            old.take(), new.take(), old_series.take(), new_series.take()
            assert len(new) == 0 and new.columns() == [[], [], []]
            continue
        try:
            o = old_dec.samples(SAMPLE if kind == "sample" else BATCH, rec, NOW)
        except InvalidSample as e:
            if kind == "batch":
                with pytest.raises(InvalidSample) as caught:
                    new_dec.columns(BATCH, as_arrays(rec), NOW)
                assert caught.value.reason == e.reason
            continue
        if kind == "sample":
            add_samples(o.samples, new_ids, new, new_series)  # the store's path for samples
        else:
            n = new_dec.columns(BATCH, as_arrays(rec), NOW)
            assert [(i, e.reason) for i, e in n.rejected] == [(i, e.reason) for i, e in o.rejected]
            assert add_sample_batch(n.batch, new_ids, new, new_series) == len(o.samples)
        add_samples(o.samples, old_ids, old, old_series)
        assert len(new) == len(old) and len(new_series) == len(old_series)
    assert_same_samples(old, new)
    assert new_series.data == old_series.data
    assert new_ids.due == old_ids.due


def test_series_rows_follow_first_samples_and_chunks_keep_order() -> None:
    ids, out, series = SeriesIds(), SampleColumns(), Columns(SERIES_COLUMNS)
    a = SeriesInfo('a{x="1"}', "a", {"x": "1"}, "COUNTER", "s")
    b = SeriesInfo("b", "b", {}, "GAUGE", "")
    batch = SampleBatch([a, None, b], np.array([2, 0, 2]), np.array([5, 6, 7]),
                        np.array([0.5, 1.5, 2.5]))  # fmt: skip
    out.add(1, 1, 1.0)  # a row of the per-sample path first
    assert add_sample_batch(batch, ids, out, series) == 3
    out.add(2, 2, 2.0)
    sa, sb = series_id('a{x="1"}'), series_id("b")
    assert series.data == [[sb, sa], ["b", 'a{x="1"}'], ["b", "a"], [{}, {"x": "1"}],
                           ["GAUGE", "COUNTER"], ["", "s"], [5, 6], [7, 6]]  # fmt: skip
    sid, ts, val = out.columns()
    assert sid.tolist() == [1, sb, sa, sb, 2] and ts == [1, 5, 6, 7, 2]
    assert val.tolist() == [1.0, 0.5, 1.5, 2.5, 2.0] and len(out) == 5
    assert add_sample_batch(batch, ids, out, series) == 3 and len(series) == 2  # known now
    assert out.columns()[0].tolist() == [1, sb, sa, sb, 2, sb, sa, sb]


def test_a_sample_pointing_at_no_series_is_an_error() -> None:
    batch = SampleBatch([None], np.array([0]), np.array([5]), np.array([1.0]))
    with pytest.raises(ValueError, match="sample 0 points at series 0"):
        add_sample_batch(batch, SeriesIds(), SampleColumns(), Columns(SERIES_COLUMNS))


# -- through Store.handle and Writer.flush ---------------------------------------------
class RecordingClient:
    """Keeps what each insert was given, as plain lists; ``failures`` inserts of a
    table fail first."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.failures = dict(failures or {})
        self.inserts: list[tuple[str, list[list[Any]]]] = []

    def insert(self, table: str, data: list[Any], **_: Any) -> None:
        if self.failures.get(table):
            self.failures[table] -= 1
            raise ConnectionError("down")
        self.inserts.append((table, [plain(c) for c in data]))


SETTINGS = Settings.load(None)


def new_store(client: RecordingClient, columnar: bool) -> tuple[Store, CollectorRegistry]:
    registry = CollectorRegistry()
    store = Store(SETTINGS, Writer(client, StoreMetrics(registry)), None, CODEC)  # type: ignore[arg-type]
    if not columnar:  # today's path: fastavro and a Sample per row
        store.batch_decoder.accepts = lambda data: False  # type: ignore[method-assign]
    return store, registry


def invalid_counts(registry: CollectorRegistry) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for m in registry.collect()
        for s in m.samples
        if s.name == "monitoring_store_invalid_events_total"
    }


def encode(kind: str, rec: Any) -> bytes:
    return CODEC.encode(BATCH if kind == "batch" else SAMPLE, rec)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_store_inserts_the_same_data_either_way(ops: list[tuple[str, Any]]) -> None:
    runs = []
    for columnar in (False, True):
        client = RecordingClient()
        store, registry = new_store(client, columnar)
        for kind, rec in ops:
            if kind == "flush":
                store.writer.flush()
            else:
                store.handle(StoreMessage(encode(kind, rec), NOW))
        pending = store.writer.pending
        store.writer.flush()
        runs.append((client.inserts, invalid_counts(registry), pending))
    (old_inserts, old_invalid, old_pending), (new_inserts, new_invalid, new_pending) = runs
    assert new_pending == old_pending and new_invalid == old_invalid
    assert [t for t, _ in new_inserts] == [t for t, _ in old_inserts]
    for (table, old), (_, new) in zip(old_inserts, new_inserts, strict=True):
        if table == "samples":
            assert old[:2] == new[:2] and bits(old[2]) == bits(new[2])
        else:
            assert old == new


def test_handle_counts_rejected_samples_and_bad_batches() -> None:
    store, registry = new_store(RecordingClient(), columnar=True)
    rec = {"source": "t", "series": ['cpu{host="a"}', "bad name"], "kinds": [], "units": [],
           "series_index": [0, 0, 1, 0, 0], "timestamps_ms": [NOW, NOW + 1, NOW, 5, NOW + 2],
           "values": [1.0, math.nan, 2.0, 3.0, 4.0]}  # fmt: skip
    store.handle(StoreMessage(encode("batch", rec), NOW))
    assert store.writer.pending == 3  # two samples and their series row
    assert store.writer.samples.chunk_rows == 2  # through the columnar path
    assert invalid_counts(registry) == {"non-finite-value": 1, "bad-name": 1,
                                        "timestamp-too-old": 1}  # fmt: skip
    data = encode("batch", rec)
    store.handle(StoreMessage(data[:-3], NOW))  # a body cut short
    store.handle(StoreMessage(encode("batch", {**rec, "series_index": [0, 2, 0, 0, 0]}), NOW))
    store.handle(StoreMessage(encode("batch", {**rec, "values": [1.0]}), NOW))
    counts = invalid_counts(registry)
    assert counts["truncated"] == 1 and counts["bad-series-index"] == 1
    assert counts["batch-length-mismatch"] == 1 and store.writer.pending == 3


def test_failed_flush_keeps_mixed_rows_for_the_retry() -> None:
    client = RecordingClient(failures={"samples": 2})
    store, _ = new_store(client, columnar=True)
    batch = {"source": "t", "series": ["up"], "kinds": [], "units": [],
             "series_index": [0, 0], "timestamps_ms": [NOW - 2, NOW - 1],
             "values": [1.0, 2.0]}  # fmt: skip
    sample = {"name": "up", "labels": {}, "timestamp_ms": NOW - 3, "value": 3.0,
              "kind": "GAUGE", "unit": "", "source": ""}  # fmt: skip
    store.handle(StoreMessage(encode("sample", sample), NOW))
    store.handle(StoreMessage(encode("batch", batch), NOW))
    store.handle(StoreMessage(encode("sample", {**sample, "timestamp_ms": NOW}), NOW))
    assert store.writer.pending == 5  # four samples, one series row
    for _ in range(2):
        with pytest.raises(ConnectionError):
            store.writer.flush()
        assert store.writer.pending == 4  # the series row went in; the samples are kept
    assert store.writer.flush() == 4 and store.writer.pending == 0
    sid = series_id("up")
    assert client.inserts[1] == (
        "samples", [[sid] * 4, [NOW - 3, NOW - 2, NOW - 1, NOW], [3.0, 1.0, 2.0, 3.0]]
    )  # fmt: skip
