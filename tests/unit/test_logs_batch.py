"""Batched log contracts: LogBatch / StoredLogBatch codecs against fastavro, the batch
path of the domain against the single-record path, rows, row identity, shipper groups."""

from __future__ import annotations

import io
from typing import Any

import fastavro
import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitoring.agents.log_processing import LogProcessor, batch_event_id, event_id
from monitoring.dev.deploy import free_port
from monitoring.logs.analyzer import PartitionLogs
from monitoring.logs.batch import LogColumns, StoredColumns
from monitoring.logs.corpus import generate
from monitoring.logs.records import InvalidLog, LogLimits
from monitoring.sdk.log_shipping import LogShipper
from monitoring.sinks.clickhouse.rows import LOG_COLUMNS, Columns, add_log, add_log_batch
from monitoring.wire.codec import HEADER_LEN, AvroCodec, DecodeError
from monitoring.wire.log_batch import (
    LOG_BATCH,
    STORED_LOG_BATCH,
    LogBatchDecoder,
    LogBatchEncoder,
    StoredLogBatchEncoder,
)
from monitoring.wire.log_encoding import LOG_RECORD

CODEC = AvroCodec.from_directory()
ENCODER = LogBatchEncoder(CODEC)
DECODER = LogBatchDecoder(CODEC)
NOW = 1_700_000_000_000

text = st.text(max_size=90)
attrs = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
line = st.tuples(st.integers(-(2**40), 2**42), text, text, text, text, text, text, attrs)


def fastavro_batch(service: str, host: str, lines: list[Any]) -> bytes:
    """The LogBatch of ``lines`` written by fastavro (the oracle)."""
    base = lines[0][0] if lines else 0
    al, ak, av = [], [], []
    for i, ln in enumerate(lines):
        for k, v in ln[7].items():
            al.append(i)
            ak.append(k)
            av.append(v)
    cols = list(zip(*lines, strict=True)) if lines else [[]] * 8
    return CODEC.encode(
        LOG_BATCH,
        {"service": service, "host": host, "timestamp_ms": base,
         "timestamp_offsets_ms": [t - base for t in cols[0]], "levels": list(cols[1]),
         "loggers": list(cols[2]), "messages": list(cols[3]), "trace_ids": list(cols[4]),
         "span_ids": list(cols[5]), "exceptions": list(cols[6]), "attribute_lines": al,
         "attribute_keys": ak, "attribute_values": av},
    )  # fmt: skip


@settings(max_examples=examples(150), deadline=None)
@given(text, text, st.lists(line, max_size=70))
def test_batch_encoder_writes_fastavros_bytes_and_decodes_back(
    service: str, host: str, lines: list[Any]
) -> None:
    data = ENCODER.encode(service, host, lines)
    assert data == fastavro_batch(service, host, lines)
    cols = DECODER.decode(data)
    assert (cols.service, cols.host, cols.utf8_replaced) == (service, host, frozenset())
    assert cols.timestamps_ms == [ln[0] for ln in lines]
    assert cols.levels == [ln[1] for ln in lines]
    assert cols.messages == [ln[3] for ln in lines]
    assert cols.exceptions == [ln[6] for ln in lines]
    assert cols.attributes == {i: dict(ln[7]) for i, ln in enumerate(lines) if ln[7]}
    slow = LogBatchDecoder(CODEC)
    slow._fast_header = None  # the fastavro fallback reads the same
    assert slow.decode(data) == cols


def test_many_lines_in_blocks_of_more_than_one_byte_counts() -> None:
    lines = [
        (NOW + i, "info", "", f"m{i}" * (i % 50), "", "", "", {"k": str(i)}) for i in range(600)
    ]
    data = ENCODER.encode("svc", "h", lines)
    assert data == fastavro_batch("svc", "h", lines)
    cols = DECODER.decode(data)
    assert cols.messages[599] == "m599" * 49 and cols.attributes[599] == {"k": "599"}


def test_invalid_utf8_flags_only_its_line() -> None:
    placeholder = "Q" * 6
    lines = [
        (NOW, "info", "", "ok", "", "", "", {}),
        (NOW, "info", "", placeholder, "", "", "", {}),
    ]
    data = ENCODER.encode("svc", "h", lines).replace(placeholder.encode(), b"a\xff\xfebc\xe9")
    cols = DECODER.decode(data)
    assert cols.messages == ["ok", "a\ufffd\ufffdbc\ufffd"]
    assert cols.utf8_replaced == {1}
    data = ENCODER.encode(placeholder, "h", lines).replace(placeholder.encode(), b"s\xff" * 3, 1)
    assert DECODER.decode(data).utf8_replaced == {0, 1}  # the service: every line


def test_bad_batches() -> None:
    good = ENCODER.encode("svc", "h", [(NOW, "info", "", "m", "", "", "", {})])
    with pytest.raises(DecodeError) as e:
        DECODER.decode(good[:-2])
    assert e.value.reason == "truncated"
    with pytest.raises(DecodeError) as e:
        DECODER.decode(good + b"\x00")
    assert e.value.reason == "trailing-bytes"
    uneven = fastavro_batch("svc", "h", [(NOW, "info", "", "m", "", "", "", {})])
    rec = CODEC.decode(uneven).record | {"levels": ["info", "warn"]}
    with pytest.raises(DecodeError) as e:
        DECODER.decode(CODEC.encode(LOG_BATCH, rec))
    assert (e.value.reason, "2 levels for 1 timestamps" in str(e.value)) == ("bad-batch", True)
    rec = CODEC.decode(uneven).record | {"attribute_lines": [3], "attribute_keys": ["k"],
                                         "attribute_values": ["v"]}  # fmt: skip
    with pytest.raises(DecodeError) as e:
        DECODER.decode(CODEC.encode(LOG_BATCH, rec))
    assert e.value.reason == "bad-batch" and "line 3" in str(e.value)
    big = ENCODER.encode("svc", "h", [(NOW, "", "", "m", "", "", "", {})] * 4097)
    with pytest.raises(DecodeError) as e:
        DECODER.decode(big)
    assert e.value.reason == "bad-batch" and "4097 lines" in str(e.value)


def test_every_length_encoding_decodes_and_every_cut_is_truncated() -> None:
    """Item lengths of one byte (< 64), two (< 8192) and three, ASCII and not: the
    decoder reads what fastavro wrote; every strict prefix is an error, never rows."""
    msgs = ["short", "x" * 63, "y" * 64, "z" * 8191, "w" * 8192 + "é", "日本語" * 30, ""]
    lines = [(NOW + i, "info", "lg", m, "", "", m[:70], {"k": m[:100]}) for i, m in enumerate(msgs)]
    data = ENCODER.encode("svc", "h", lines)
    assert data == fastavro_batch("svc", "h", lines)
    cols = DECODER.decode(data)
    assert cols.messages == msgs and cols.exceptions == [m[:70] for m in msgs]
    assert cols.attributes == {i: {"k": m[:100]} for i, m in enumerate(msgs)}
    for cut in range(HEADER_LEN, len(data)):
        with pytest.raises(DecodeError) as e:
            DECODER.decode(data[:cut])
        assert e.value.reason == "truncated", cut


def test_a_negative_string_length_is_a_decode_error() -> None:
    data = ENCODER.encode("svc", "h", [(NOW, "info", "", "QQ", "", "", "", {})])
    at = data.index(b"\x04QQ")  # the message: length 2 (zig-zag 4)
    for bad in (b"\x03", b"\x81\x01"):  # -2 in one byte; -65 in two
        with pytest.raises(DecodeError) as e:
            DECODER.decode(data[:at] + bad + data[at + 1 :])
        assert e.value.reason == "bad-body" and "negative string length" in str(e.value)


@settings(max_examples=examples(100), deadline=None)
@given(
    text, text, st.lists(st.integers(-5, 2**31), max_size=40),
    st.lists(st.integers(0, 2**62), min_size=3, max_size=3), attrs,
)  # fmt: skip
def test_stored_batch_encoder_writes_fastavros_bytes(
    service: str, host: str, tids: list[int], nums: list[int], a: dict[str, str]
) -> None:
    n = len(tids)
    s = StoredColumns(
        service, host, list(range(0, 2 * n, 2)), [NOW - i * 3 for i in range(n)],
        ["INFO"] * n, [9] * n, ["lg"] * n, [f"mé {i}" for i in range(n)], [""] * n,
        ["s"] * n, ["x" * i for i in range(n)], {0: a} if a and n else {}, tids,
    )  # fmt: skip
    data = StoredLogBatchEncoder(CODEC).encode(s, nums[0], nums[1])
    lines = sorted(s.attributes)
    expected = CODEC.encode(
        STORED_LOG_BATCH,
        {"service": service, "host": host, "observed_ms": nums[1], "event_id_base": nums[0],
         "line_indexes": s.line_indexes, "timestamp_ms": NOW if n else 0,
         "timestamp_offsets_ms": [-i * 3 for i in range(n)], "levels": s.levels,
         "severities": s.severities, "loggers": s.loggers, "messages": s.messages,
         "trace_ids": s.trace_ids, "span_ids": s.span_ids, "exceptions": s.exceptions,
         "template_ids": tids, "attribute_lines": [ln for ln in lines for _ in s.attributes[ln]],
         "attribute_keys": [k for ln in lines for k in s.attributes[ln]],
         "attribute_values": [v for ln in lines for v in s.attributes[ln].values()]},
    )  # fmt: skip
    assert data == expected


# -- the domain: a batch gives what its lines give one by one -------------------------
LIMITS = LogLimits(max_message_bytes=40, max_attributes=2)
level = st.sampled_from(["info", "ERROR", "warning", "3", "LOUD", "", "fatal", " Debug "])
ts = st.sampled_from([NOW, NOW + 7, NOW - 20_000, 0, NOW + 10**9, 123])
msg = st.sampled_from(["", "db timeout after 30 s", "db timeout after 31 s", "user 7 left",
                       "é" * 15, "x" * 41, "user 8 left", "user 9 joined", "db retry after 2 s",
                       "sum c9c1b6d13089 ok", "sum 5a7e0c9d1b2f ok"])  # fmt: skip
exc = st.sampled_from(["", "", "Traceback\nValueError: x", "y" * 50])
battrs = st.dictionaries(st.sampled_from("abc"), st.sampled_from(["1", "2"]), max_size=3)
bline = st.tuples(ts, level, msg, exc, battrs, st.booleans())


def columns(service: str, lines: list[Any]) -> LogColumns:
    return LogColumns(
        service, "h", [ln[0] for ln in lines], [ln[1] for ln in lines], ["lg"] * len(lines),
        [ln[2] for ln in lines], ["t"] * len(lines), [""] * len(lines),
        [ln[3] for ln in lines], {i: ln[4] for i, ln in enumerate(lines) if ln[4]},
        frozenset(i for i, ln in enumerate(lines) if ln[5]),
    )  # fmt: skip


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.lists(bline, min_size=1, max_size=12), min_size=1, max_size=4),
       st.sampled_from(["api", " "]))  # fmt: skip
def test_process_batch_equals_processing_each_line(batches: list[Any], service: str) -> None:
    one, many = PartitionLogs(10_000, LIMITS), PartitionLogs(10_000, LIMITS)
    offset = 0
    for b in batches:
        cols = columns(service, b)
        got = many.process_batch(offset, cols, NOW)
        assert got is not None
        expected_rows, expected_events, expected_samples, expected_rejected = [], [], [], []
        for i in range(cols.lines):
            try:
                r = one.process(offset * 100 + i, cols.record(i), NOW, i in cols.utf8_replaced)
            except InvalidLog as e:
                expected_rejected.append((i, e.reason))
                continue
            assert r is not None
            expected_rows.append((i, *r.entry, r.template_id))
            expected_events += r.events
            expected_samples += r.samples
        s = got.stored
        rows = [] if s is None else [
            (s.line_indexes[p], s.timestamps_ms[p], service, s.host, s.levels[p],
             s.severities[p], s.loggers[p], s.messages[p], s.trace_ids[p], s.span_ids[p],
             s.exceptions[p], s.attributes.get(p, {}), s.template_ids[p])
            for p in range(s.lines)
        ]  # fmt: skip
        assert rows == expected_rows
        assert [(i, e.reason) for i, e in got.rejected] == expected_rejected
        assert got.events == expected_events
        assert got.samples == expected_samples
        offset += 1
    if service.strip():  # a replayed batch is skipped (one without a service has no state)
        assert many.process_batch(offset - 1, columns(service, batches[-1]), NOW) is None


# -- the processor, row identity, the store's rows ------------------------------------
def test_processor_handles_batches_and_single_records_alike() -> None:
    lines = [
        (NOW, "info", "web", "user 7 logged in", "", "", "", {"region": "eu"}),
        (NOW + 1, "info", "web", "", "", "", "", {}),  # no message: dead letter
        (NOW + 2, "err", "web", "user 8 logged in", "", "", "boom", {}),
    ]
    proc = LogProcessor(CODEC, 6)
    part = PartitionLogs()
    out = proc.handle(part, 3, 9, ENCODER.encode("api", "h1", lines), NOW + 5)
    assert out is not None and out.stored is not None
    assert [(r.line, r.reason) for r in out.rejected] == [(1, "missing-message")]
    bad = CODEC.decode(out.rejected[0].value)
    assert bad.name == LOG_RECORD and bad.record["timestamp_ms"] == NOW + 1
    assert out.stored[0] == b"api"
    rec = CODEC.decode(out.stored[1]).record
    assert rec["event_id_base"] == batch_event_id(3, 9) == (1 << 62) | (3 << 52) | (9 << 12)
    assert rec["line_indexes"] == [0, 2]
    assert (rec["levels"], rec["severities"]) == (["INFO", "ERROR"], [9, 17])
    assert rec["messages"] == ["user 7 logged in", "user 8 logged in"]
    assert (rec["attribute_lines"], rec["attribute_keys"]) == ([0], ["region"])
    assert rec["template_ids"] == [1, 1] and rec["observed_ms"] == NOW + 5
    single = CODEC.encode(LOG_RECORD, {"timestamp_ms": NOW + 3, "service": "api",
                                       "message": "user 9 logged in"})  # fmt: skip
    out = proc.handle(part, 3, 10, single, NOW + 6)  # the old contract, same partition
    assert out is not None and out.stored is not None
    assert CODEC.decode(out.stored[1]).record["template_id"] == 1
    assert proc.handle(part, 3, 9, ENCODER.encode("api", "h1", lines), NOW) is None  # replay


def test_event_ids_of_batches_and_single_records_never_collide() -> None:
    singles = {event_id(p, o) for p in range(8) for o in range(0, 1 << 30, 1 << 22)}
    batched = {
        batch_event_id(p, o, i) for p in range(8) for o in range(0, 1 << 30, 1 << 22)
        for i in (0, 1, 4095)
    }  # fmt: skip
    assert len(batched) == 8 * 256 * 3 and not singles & batched
    assert max(batched) < 1 << 63  # a signed long, and UInt64 in the table
    for bad in ((1024, 0, 0), (0, 1 << 40, 0), (0, 0, 4096), (-1, 0, 0)):
        with pytest.raises(ValueError):
            batch_event_id(*bad)


def test_batch_rows_equal_the_rows_of_single_stored_records() -> None:
    records = [ln.record for ln in generate(40, seed=5) if ln.record["service"] == "api"]
    proc = LogProcessor(CODEC, 6)
    fields = ("timestamp_ms", "level", "logger", "message", "trace_id", "span_id",
              "exception", "attributes")  # fmt: skip
    batch = ENCODER.encode("api", "h", [tuple(r[f] for f in fields) for r in records])
    out = proc.handle(PartitionLogs(), 1, 5, batch, NOW)
    assert out is not None and out.stored is not None
    rows = Columns(LOG_COLUMNS)
    add_log_batch(CODEC.decode(out.stored[1]).record, rows)
    oracle = Columns(LOG_COLUMNS)
    part = PartitionLogs()
    for i, r in enumerate(records):  # one record each, ids set to the batch's
        single = proc.handle(part, 0, i, CODEC.encode(LOG_RECORD, r | {"host": "h"}), NOW)
        assert single is not None and single.stored is not None
        rec = CODEC.decode(single.stored[1]).record
        add_log(rec | {"event_id": batch_event_id(1, 5, i)}, oracle)
    assert rows.data == oracle.data and len(rows) == len(records) > 3


def test_store_rejects_a_stored_batch_whose_arrays_disagree() -> None:
    s = StoredColumns("a", "h", [0], [NOW], ["INFO"], [9], [""], ["m"], [""], [""], [""], {}, [1])
    rec = CODEC.decode(StoredLogBatchEncoder(CODEC).encode(s, 1 << 62, NOW)).record
    rows = Columns(LOG_COLUMNS)
    with pytest.raises(ValueError, match="2 messages for 1 rows"):
        add_log_batch(rec | {"messages": ["m", "n"]}, rows)
    assert len(rows) == 0


# -- the shipper's groups -------------------------------------------------------------
@pytest.fixture
def shipper() -> Any:
    s = LogShipper(f"127.0.0.1:{free_port()}", "t", "app", host="h1", buffer_size=100,
                   max_in_flight=0, max_record_bytes=300, batch_lines=4,
                   registry=CollectorRegistry(), producer_config={"log_level": 0})  # fmt: skip
    yield s
    s.close(0.1)


def entry(i: int, service: str = "app", host: str = "h1", msg: str = "m") -> Any:
    return (NOW + i, service, host, "INFO", "lg", f"{msg}{i}", "", "", "", {"i": str(i)})


def test_shipper_groups_consecutive_records_of_one_service_and_host(shipper: LogShipper) -> None:
    for e in [entry(i) for i in range(6)] + [entry(6, host="h2"), entry(7, "other")]:
        shipper.buffer.append(e)
    groups = [shipper._take(4) for _ in range(5)]
    assert [[e[0] - NOW for e in g] for g in groups] == [[0, 1, 2, 3], [4, 5], [6], [7], []]
    cols = DECODER.decode(shipper._encode_batch(groups[0]))
    assert (cols.service, cols.host, cols.messages) == ("app", "h1", ["m0", "m1", "m2", "m3"])
    assert cols.attributes == {i: {"i": str(i)} for i in range(4)}
    for e in [entry(0, msg="x" * 200), entry(1, msg="y" * 200)]:  # ~max_record_bytes of text
        shipper.buffer.append(e)
    assert len(shipper._take(4)) == 1 and len(shipper._take(4)) == 1


def test_shipper_cuts_oversized_lines_of_a_batch(shipper: LogShipper) -> None:
    data = shipper._encode_batch([entry(0, msg="x" * 400), entry(1)])
    cols = DECODER.decode(data)
    assert cols.messages == ["x" * 300, "m1"]
    assert cols.attributes[0] == {
        "i": "0", "monitoring.truncated": "message", "monitoring.original_bytes": "message=401",
    }  # fmt: skip


def test_batch_lines_is_checked() -> None:
    with pytest.raises(ValueError, match="batch_lines 5000"):
        LogShipper("127.0.0.1:1", "t", "app", batch_lines=5000)


def test_header_of_every_batch_version_is_recognised() -> None:
    data = ENCODER.encode("s", "h", [])
    assert DECODER.accepts(data) and not DECODER.accepts(data[: HEADER_LEN - 1])
    assert not DECODER.accepts(CODEC.encode(LOG_RECORD, {"timestamp_ms": 1, "service": "s",
                                                         "message": "m"}))  # fmt: skip
    buf = io.BytesIO(data[HEADER_LEN:])
    assert fastavro.schemaless_reader(buf, CODEC.latest(LOG_BATCH).parsed)["service"] == "s"


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(bline, min_size=1, max_size=20))
def test_columns_passed_through_are_copied_as_encoding_them_would_write(lines: list[Any]) -> None:
    data = ENCODER.encode("api", "h", [(ln[0], ln[1], "lg", ln[2], "t", "", ln[3], ln[4])
                                       for ln in lines])  # fmt: skip
    proc = LogProcessor(CODEC, 6)
    out = proc.handle(PartitionLogs(10_000, LIMITS), 2, 7, data, NOW)
    assert out is not None
    r = PartitionLogs(10_000, LIMITS).process_batch(7, DECODER.decode(data), NOW)
    assert r is not None and [i for i, _ in r.rejected] == [x.line for x in out.rejected]
    if r.stored is None:
        assert out.stored is None
    else:
        assert out.stored is not None
        assert out.stored[1] == StoredLogBatchEncoder(CODEC).encode(
            r.stored, batch_event_id(2, 7), NOW
        )
