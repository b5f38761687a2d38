"""Producer SDK without a broker: partitioning, encoding, instruments, backpressure."""

from __future__ import annotations

import ctypes
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.samples import InvalidSample, samples_from_record, series_key
from monitoring.sdk.producer import (
    BatchEncoder,
    BufferFullError,
    MetricsCollector,
    ProducerClosedError,
    SampleEncoder,
    SeriesRef,
    group_by_partition,
    make_series,
    murmur2,
    partition_for,
    sample_record,
)
from monitoring.wire.codec import AvroCodec

NO_BROKER = "127.0.0.1:1"  # nothing listens on port 1: deliveries never complete
T0 = 1_700_000_000_000


@pytest.fixture
def offline() -> Iterator[list[MetricsCollector]]:
    """Collectors pointed at no broker; closed without waiting at the end."""
    made: list[MetricsCollector] = []
    yield made
    for mc in made:
        mc.close(timeout=0)


def collector(made: list[MetricsCollector], **kw: object) -> MetricsCollector:
    opts: dict[str, object] = {"bootstrap_servers": NO_BROKER, "num_partitions": 6}
    opts.update(kw)
    mc = MetricsCollector(**opts)  # type: ignore[arg-type]
    made.append(mc)
    return mc


# --------------------------------------------------------------------------- murmur2


@pytest.mark.parametrize(
    ("key", "expected"),
    [  # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_java(key: bytes, expected: int) -> None:
    assert ctypes.c_int32(murmur2(key)).value == expected


@pytest.mark.parametrize(
    ("key", "partition"),
    # kafka-python's vectors, from Java's DefaultPartitioner with 1000 partitions
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_partition_matches_java_default_partitioner(key: bytes, partition: int) -> None:
    assert partition_for(key, 1000) == partition


@given(st.binary(max_size=200))
def test_murmur2_equals_aiokafka(data: bytes) -> None:
    assert murmur2(data) == aiokafka_murmur2(data)


def test_partition_of_series_key_is_stable() -> None:
    key = series_key("cpu", {"host": "a"})
    assert partition_for(key, 6) == partition_for(key.encode(), 6)
    assert 0 <= partition_for(key, 6) < 6


# --------------------------------------------------------------------------- batching

label_values = st.text(alphabet='abcxyz019-_/"\\', max_size=6)
series_st = st.builds(
    lambda name, labels: make_series(name, labels),
    st.sampled_from(["cpu", "mem", "http_requests_total", "x:y"]),
    st.dictionaries(st.sampled_from(["host", "cpu", "route", "a_b"]), label_values, max_size=3),
)
items_st = st.lists(
    st.tuples(
        series_st,
        st.integers(T0 - 10**6, T0 + 10**6),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    max_size=80,
)


@settings(max_examples=examples(150), deadline=None)
@given(items_st, st.integers(1, 12))
def test_batches_put_every_sample_in_its_keys_partition(
    items: list[tuple[SeriesRef, int, float]], n: int
) -> None:
    codec = AvroCodec.from_directory()
    encoder = BatchEncoder(codec)
    groups = group_by_partition(items, n)
    assert sorted(len(g) for g in groups.values()) == sorted(
        len([i for i in items if partition_for(i[0].key, n) == p]) for p in groups
    )
    seen: list[tuple[str, int, float]] = []
    for p, group in groups.items():
        decoded = codec.decode(encoder.encode(group, "src"))
        result = samples_from_record(decoded.name, decoded.record, now_ms=T0 + 10**7)
        assert not result.rejected
        for s in result.samples:
            assert partition_for(s.series, n) == p  # the key of every series -> this partition
        assert [(s.series, s.timestamp_ms, s.value) for s in result.samples] == [
            (i[0].key, i[1], i[2]) for i in group
        ]  # order kept within a partition
        seen.extend((s.series, s.timestamp_ms, s.value) for s in result.samples)
    assert sorted(seen) == sorted((i[0].key, i[1], i[2]) for i in items)


@settings(max_examples=examples(150), deadline=None)
@given(
    series_st,
    st.integers(-(2**62), 2**62) | st.integers(0, 2**43),  # incl. the six-byte fast path
    st.floats(allow_nan=False),
    st.text(max_size=5),
)
def test_sample_encoder_matches_fastavro(s: SeriesRef, ts: int, v: float, source: str) -> None:
    codec = AvroCodec.from_directory()
    enc = SampleEncoder(codec, source)
    assert enc.fast
    assert enc.encode(s, ts, v) == codec.encode(
        "monitoring.MetricSample", sample_record(s, ts, v, source)
    )


def test_series_without_cached_descriptor_still_encodes() -> None:
    codec = AvroCodec.from_directory()
    s = SeriesRef(series_key("cpu", {"h": "a"}), "cpu", {"h": "a"})
    assert codec.decode(SampleEncoder(codec).encode(s, T0, 2.0)).record["labels"] == {"h": "a"}


# --------------------------------------------------------------------------- instruments


def test_histogram_emits_cumulative_buckets_sum_and_count(offline: list[MetricsCollector]) -> None:
    mc = collector(offline)
    h = mc.histogram("rpc_seconds", buckets=(0.1, 1, 5), labels={"job": "api"}, unit="seconds")
    for v in (0.05, 0.1, 0.5, 2, 7):
        h.observe(v)
    h.labels(route="/x").observe(0.2)
    got = {s.key: (v, s.kind, s.unit) for s, v in mc.snapshot()}
    base = 'rpc_seconds_bucket{job="api",le="%s"}'
    assert got[base % "0.1"] == (2.0, "HISTOGRAM_BUCKET", "seconds")  # le is inclusive
    assert got[base % "1.0"][0] == 3.0
    assert got[base % "5.0"][0] == 4.0
    assert got[base % "+Inf"][0] == 5.0
    assert got['rpc_seconds_sum{job="api"}'] == (9.65, "COUNTER", "seconds")
    assert got['rpc_seconds_count{job="api"}'] == (5.0, "COUNTER", "")
    assert got['rpc_seconds_bucket{job="api",le="0.1"}'][0] == 2.0
    assert got['rpc_seconds_bucket{job="api",le="1.0",route="/x"}'][0] == 1.0
    assert len(got) == 2 * (4 + 2)


def test_counters_and_gauges_keep_values_and_collect_at_one_timestamp(
    offline: list[MetricsCollector],
) -> None:
    mc = collector(offline, batch_size=10_000, linger=3600)
    c = mc.counter("http_requests_total", labels={"service": "api"}, unit="requests")
    c.inc()
    c.inc(2, route="/a")
    c.labels(route="/a").inc(3)
    with pytest.raises(ValueError, match="only increase"):
        c.inc(-1)
    g = mc.gauge("queue_depth")
    g.set(10)
    g.inc(5)
    g.dec(2)
    assert mc.counter("http_requests_total") is c  # get-or-create
    with pytest.raises(ValueError, match="already a counter"):
        mc.gauge("http_requests_total")
    values = {s.key: v for s, v in mc.snapshot()}
    assert values == {
        'http_requests_total{service="api"}': 1.0,
        'http_requests_total{route="/a",service="api"}': 5.0,
        "queue_depth": 13.0,
    }
    assert mc.collect(timestamp_ms=T0) == 3
    pending = mc._core.pending
    assert {ts for _, ts, _ in pending} == {T0}
    assert mc.stats()["pending"] == 3


def test_record_validates_name_labels_and_value(offline: list[MetricsCollector]) -> None:
    mc = collector(offline)
    with pytest.raises(InvalidSample, match="bad-name"):
        mc.record("bad name", 1.0)
    with pytest.raises(InvalidSample, match="bad-label-name"):
        mc.record("ok", 1.0, {"__reserved": "x"})
    with pytest.raises(InvalidSample, match="non-finite"):
        mc.record("ok", math.nan)
    with pytest.raises(InvalidSample, match="bad-kind"):
        mc.record("ok", 1.0, kind="METER")
    assert mc.record("ok", 1, {"cpu": 3})  # non-string label values become strings
    assert mc._core.pending[-1][0].labels == {"cpu": "3"}


# --------------------------------------------------------------------------- buffering


def test_linger_sends_a_partial_batch(offline: list[MetricsCollector]) -> None:
    mc = collector(offline, batch_size=1000, linger=0.05)
    for i in range(5):
        mc.record("cpu", float(i), {"host": "a"})
    deadline = time.monotonic() + 5
    while mc.stats()["pending"] and time.monotonic() < deadline:
        time.sleep(0.01)
    assert mc.stats()["pending"] == 0
    assert mc.stats()["inflight"] == 5  # handed to librdkafka, awaiting the (absent) broker


@pytest.mark.parametrize("batch", [True, False])
def test_full_buffer_blocks_then_raises(offline: list[MetricsCollector], batch: bool) -> None:
    mc = collector(offline, batch=batch, buffer_size=50, batch_size=10, block_timeout=0.3)
    for i in range(50):
        mc.record("cpu", float(i), {"host": "a"})
    t = time.monotonic()
    with pytest.raises(BufferFullError, match="buffer full"):
        mc.record("cpu", 1.0, {"host": "a"})
    assert 0.25 <= time.monotonic() - t < 3
    stats = mc.stats()
    assert stats["pending"] + stats["inflight"] == 50


def test_full_buffer_can_drop_and_count(offline: list[MetricsCollector]) -> None:
    mc = collector(offline, buffer_size=20, batch_size=5, on_full="drop")
    results = [mc.record("cpu", float(i)) for i in range(30)]
    assert results.count(True) == 20
    assert mc.stats()["dropped"] == 10
    assert (
        mc.registry.get_sample_value("monitoring_producer_samples_total", {"outcome": "dropped"})
        == 10.0
    )
    assert mc.registry.get_sample_value("monitoring_producer_buffered_samples") == 20.0


def test_close_reports_undelivered_and_rejects_more(offline: list[MetricsCollector]) -> None:
    mc = collector(offline)
    mc.counter("jobs_total").inc()
    mc.record("cpu", 1.0)
    assert mc.close(timeout=0.2) == 2  # the final snapshot of the counter, and the sample
    assert mc.closed
    with pytest.raises(ProducerClosedError):
        mc.record("cpu", 1.0)


def test_metrics_package_does_not_import_kafka() -> None:
    code = (
        "import sys, monitoring.metrics, monitoring.metrics.collector as c\n"
        "import monitoring.dev.loadgen\n"
        "assert 'confluent_kafka' not in sys.modules\n"
        "from monitoring.metrics.collector import MetricsCollector\n"
        "from monitoring.facade.collector import MetricsCollector as F\n"
        "assert MetricsCollector is F and 'confluent_kafka' not in sys.modules\n"
        "from monitoring.metrics.collector import Counter\n"
        "from monitoring.sdk.producer import Counter as C\n"
        "assert Counter is C and 'confluent_kafka' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_flush_waits_for_a_batch_the_sender_thread_holds(offline: list[MetricsCollector]) -> None:
    """A batch drained by the sender thread but not yet handed to librdkafka counts."""
    mc = collector(offline)
    core = mc._core
    mc.record("cpu", 1.0)
    held = core.drain()  # what the sender thread does before it encodes and produces
    assert len(held) == 1
    handed = threading.Event()

    def sender_thread() -> None:
        handed.wait(5)
        core._settle(len(held), ok=True)  # its delivery report

    t = threading.Thread(target=sender_thread)
    t.start()
    timer = threading.Timer(0.1, handed.set)
    timer.start()
    try:
        assert mc.flush(timeout=5) == 0
        assert handed.is_set()
    finally:
        handed.set()
        t.join()
        timer.cancel()


def test_flush_waits_only_for_what_was_buffered_at_the_call(
    offline: list[MetricsCollector],
) -> None:
    """Samples recorded during a flush (here never delivered: no broker) are not counted
    as left by it, nor waited for."""
    mc = collector(offline)
    core = mc._core
    mc.record("cpu", 1.0)
    held = core.drain()
    stop, flushing = threading.Event(), threading.Event()
    drain = core.drain

    def drain_and_say() -> list[Any]:
        flushing.set()  # the flush has taken its count: record from now on
        return drain()

    core.drain = drain_and_say  # type: ignore[method-assign]

    def another_thread() -> None:
        flushing.wait(5)
        i = 0
        while not stop.is_set():
            mc.record("cpu", float(i), {"host": "b"})
            i += 1
            if i == 50:
                core._settle(len(held), ok=True)  # the call's sample delivered meanwhile
            stop.wait(0.001)

    t = threading.Thread(target=another_thread)
    t.start()
    try:
        assert mc.flush(timeout=30) == 0
    finally:
        stop.set()
        t.join()
    with pytest.raises(ValueError, match="NaN"):
        mc.flush(timeout=float("nan"))
