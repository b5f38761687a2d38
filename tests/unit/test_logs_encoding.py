"""Hand-written LogRecord decoder and StoredLog encoder against fastavro."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.agents.log_processing import LogProcessor, event_id
from monitoring.logs.analyzer import PartitionLogs
from monitoring.metrics.samples import Sample, series_key
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.log_encoding import (
    LOG_RECORD,
    STORED_LOG,
    LogDecoder,
    StoredLogEncoder,
)
from monitoring.wire.partitioner import partition_for

CODEC = AvroCodec.from_directory()
DECODER = LogDecoder(CODEC)
ENCODER = StoredLogEncoder(CODEC)
longs = st.integers(-(2**63), 2**63 - 1)
text = st.text(max_size=300)
attrs = st.dictionaries(st.text(max_size=20), st.text(max_size=50), max_size=6)
STRINGS = ("service", "host", "level", "logger", "message", "trace_id", "span_id", "exception")


@settings(max_examples=examples(80), deadline=None)
@given(longs, st.tuples(*([text] * 8)), attrs)
def test_decoder_equals_fastavro(ts: int, strings: tuple[str, ...], a: dict[str, str]) -> None:
    rec = {"timestamp_ms": ts, **dict(zip(STRINGS, strings, strict=True)), "attributes": a}
    data = CODEC.encode(LOG_RECORD, rec)
    assert DECODER.decode(data) == (CODEC.decode(data).record, False)


@settings(max_examples=examples(80), deadline=None)
@given(
    st.tuples(longs, longs, longs),
    st.tuples(*([text] * 3)),
    st.integers(-(2**31), 2**31 - 1),
    st.tuples(*([text] * 5)),
    attrs,
    longs,
)
def test_encoder_equals_fastavro(
    nums: tuple[int, ...],
    ident: tuple[str, ...],
    sev: int,
    rest: tuple[str, ...],
    a: dict[str, str],
    tid: int,
) -> None:
    rec: dict[str, Any] = {
        "event_id": nums[0],
        "timestamp_ms": nums[1],
        "observed_ms": nums[2],
        "service": ident[0],
        "host": ident[1],
        "level": ident[2],
        "severity": sev,
        "logger": rest[0],
        "message": rest[1],
        "trace_id": rest[2],
        "span_id": rest[3],
        "exception": rest[4],
        "attributes": a,
        "template_id": tid,
    }
    assert ENCODER.encode(rec) == CODEC.encode(STORED_LOG, rec)


def with_invalid_utf8(message: bytes) -> bytes:
    placeholder = "Z" * len(message)
    data = CODEC.encode(LOG_RECORD, {"timestamp_ms": 1, "service": "s", "message": placeholder})
    return data.replace(placeholder.encode(), message)


def test_invalid_utf8_is_replaced_and_flagged() -> None:
    d = DECODER.decode(with_invalid_utf8(b"caf\xe9 \xff\xfe ok"))
    assert d.utf8_replaced
    assert d.record["message"] == "caf\ufffd \ufffd\ufffd ok"
    with pytest.raises(DecodeError):  # the generic codec refuses it
        CODEC.decode(with_invalid_utf8(b"caf\xe9"))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "not-bytes"),
        (b"\xc3\x01", "truncated"),
        (b"xx" + bytes(20), "bad-marker"),
    ],
)
def test_bad_bytes(data: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError) as e:
        DECODER.decode(data)
    assert e.value.reason == reason


def test_invalid_utf8_in_a_body_of_the_wrong_length_is_a_decode_error() -> None:
    data = CODEC.encode(LOG_RECORD, {"timestamp_ms": 1, "service": "s", "message": "Z" * 12})
    for cut in (b"\xe9\xff", b"\xe9" * 13):  # shorter or longer than its length prefix
        with pytest.raises(DecodeError):
            DECODER.decode(data.replace(b"Z" * 12, cut))


def test_truncated_and_trailing_bodies() -> None:
    good = CODEC.encode(LOG_RECORD, {"timestamp_ms": 1, "service": "svc", "message": "hello"})
    for cut in range(11, len(good) - 1):
        with pytest.raises(DecodeError) as e:
            DECODER.decode(good[:cut])
        assert e.value.reason == "truncated"
    with pytest.raises(DecodeError) as e:
        DECODER.decode(good + b"\x00")
    assert e.value.reason == "trailing-bytes"


def test_other_records_are_refused() -> None:
    data = CODEC.encode("monitoring.MetricSample", {"name": "x", "value": 1.0, "timestamp_ms": 1})
    with pytest.raises(DecodeError) as e:
        DECODER.decode(data)
    assert e.value.reason == "wrong-record"


def test_processor_outputs_decode_to_the_normalised_record() -> None:
    now = 1_700_000_000_000
    value = CODEC.encode(
        LOG_RECORD, {"timestamp_ms": now, "service": "api", "level": "3", "message": "job 7 failed"}
    )
    out = LogProcessor(CODEC, 6).handle(PartitionLogs(), 2, 41, value, now + 3)
    assert out is not None
    stored = CODEC.decode(out.stored[1]).record
    assert out.stored[0] == b"api"
    assert stored["event_id"] == event_id(2, 41) == (2 << 48) + 41
    assert (stored["level"], stored["severity"], stored["template_id"]) == ("ERROR", 17, 1)
    assert (stored["timestamp_ms"], stored["observed_ms"]) == (now, now + 3)
    tpl = CODEC.decode(out.templates[0][1]).record
    assert (tpl["change"], tpl["first_error"], tpl["template"]) == (
        "created",
        True,
        "job <:N:> failed",
    )


@pytest.mark.parametrize("partitions", [1, 6])
def test_counter_samples_go_as_one_batch_per_partition(partitions: int) -> None:
    """Every counter sample arrives once, in a MetricBatch written to the partition its
    series key hashes to (the batch's key hashes there too), in order within a series."""
    rng = random.Random(partitions)
    samples = [
        Sample(series_key("log_events_total", {"service": f"s{i % 9}", "level": lv}),
               "log_events_total", {"service": f"s{i % 9}", "level": lv}, 1_000 * i,
               float(rng.randint(1, 50)), "COUNTER")
        for i, lv in enumerate(rng.choice(["INFO", "ERROR", "WARN"]) for _ in range(60))
    ]  # fmt: skip
    out = LogProcessor(CODEC, partitions).encode_samples(samples)
    assert len(out) == len({partition_for(s.series, partitions) for s in samples})
    got = []
    for key, value in out:
        batch = CODEC.decode(value).record
        part = partition_for(key, partitions)
        cols = (batch["series_index"], batch["timestamps_ms"], batch["values"])
        for i, ts, v in zip(*cols, strict=True):
            series = batch["series"][i]
            assert partition_for(series, partitions) == part
            assert batch["kinds"][i] == "COUNTER"
            got.append((series, ts, v))
    assert sorted(got) == sorted((s.series, s.timestamp_ms, s.value) for s in samples)
    for series in {s.series for s in samples}:
        assert [g for g in got if g[0] == series] == [
            (s.series, s.timestamp_ms, s.value) for s in samples if s.series == series
        ]
