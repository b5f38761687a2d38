"""``monitoring bench codecs``: each hand-written Avro codec against fastavro.

For every hand codec (``monitoring.wire``: sample, metric batch, aggregate, log
record, stored log, log batch, stored log batch) one representative record is encoded
or decoded ``number`` times, best of ``repeat`` runs, and the same job is done with
fastavro's ``schemaless_writer``/``schemaless_reader`` and the same schema: from the
same input (a ``SeriesRef``, an ``Aggregate``, lines, columns) to the same output
(single-object bytes, a ``Sample``, an ``Aggregate``, columns), as the codec's own
fallback path does it. Each row also says whether the two agree: identical bytes for
an encoder, the same values for a decoder. The reason for
writing codecs by hand is their speed; this keeps it measured.

The last line printed is ``<codec>_us=<hand>/<fastavro> ...`` for every row.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import fastavro
import numpy as np

from monitoring.logs.batch import LogColumns, StoredColumns
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import (
    BATCH,
    SAMPLE,
    Limits,
    Sample,
    check_point,
    check_series,
    series_key,
)
from monitoring.wire.aggregate_encoding import AGGREGATE, AggregateDecoder, AggregateEncoder
from monitoring.wire.codec import HEADER_LEN, AvroCodec
from monitoring.wire.log_batch import (
    LOG_BATCH,
    STORED_LOG_BATCH,
    LogBatchDecoder,
    LogBatchEncoder,
    StoredLogBatchEncoder,
)
from monitoring.wire.log_encoding import LOG_RECORD, STORED_LOG, LogDecoder, StoredLogEncoder
from monitoring.wire.metric_batch import MetricBatchDecoder, MetricColumns
from monitoring.wire.metric_sample import MetricSampleDecoder
from monitoring.wire.sample_encoding import SampleEncoder, make_series, sample_record

NOW_MS = 1_700_000_000_000
BATCH_SAMPLES = 500
BATCH_LINES = 100
LIMITS = Limits()


class Case(NamedTuple):
    """One hand codec: what it does to the record, and fastavro's same job."""

    name: str
    items: int  # samples or lines in one record
    hand: Callable[[], object]
    fastavro: Callable[[], object]
    agree: Callable[[], bool]  # same bytes (encoders) or same values (decoders)


class Row(NamedTuple):
    """A measured case: µs per record, hand and fastavro."""

    name: str
    items: int
    hand_us: float
    fastavro_us: float
    agree: bool

    @property
    def speedup(self) -> float:
        return self.fastavro_us / self.hand_us if self.hand_us else float("nan")


def _writer(
    codec: AvroCodec, name: str, record: Callable[[], dict[str, Any]]
) -> Callable[[], bytes]:
    """fastavro's single-object bytes of the record ``record()`` builds."""
    sv = codec.latest(name)

    def write() -> bytes:
        buf = io.BytesIO()
        buf.write(sv.header)
        fastavro.schemaless_writer(buf, sv.parsed, record())
        return buf.getvalue()

    return write


def _reader(codec: AvroCodec, data: bytes, convert: Callable[[Any], Any]) -> Callable[[], Any]:
    """``convert`` of fastavro's record of ``data`` (its writer schema, by fingerprint)."""
    fp = int.from_bytes(data[2:HEADER_LEN], "little")
    writer = next(v for v in codec.versions() if v.fingerprint == fp)

    def read() -> Any:
        buf = io.BytesIO(data)
        buf.seek(HEADER_LEN)
        return convert(fastavro.schemaless_reader(buf, writer.parsed, None))

    return read


def _labels(i: int) -> dict[str, str]:
    return {"job": "api", "instance": f"10.0.{i // 250}.{i % 250}:9100", "method": "GET"}


def _aggregate(i: int = 7) -> Aggregate:
    return Aggregate(
        f'http_requests_total{{instance="10.0.0.{i}:9100",job="api",method="GET"}}',
        "http_requests_total", _labels(i), 10_000, NOW_MS, NOW_MS + 10_000, 10,
        1234.5, 100.0, 150.25, 123.45, 120.0, 121.0, 140.5, 149.75,
    )  # fmt: skip


_ATTRS = {"http.method": "GET", "http.status": "200"}
Line = tuple[int, str, str, str, str, str, str, dict[str, str]]


def _log_lines(n: int) -> list[Line]:
    return [
        (NOW_MS + 7 * k, "info" if k % 10 else "error", "api.handlers",
         f"GET /api/v1/orders/{1000 + k} 200 in {k % 90} ms",
         "4bf92f3577b34da6a3ce929d0e0e4736" if k % 3 == 0 else "", "", "",
         _ATTRS if k % 4 == 0 else {})
        for k in range(n)
    ]  # fmt: skip


def _sparse(attrs: dict[int, dict[str, str]]) -> dict[str, list[Any]]:
    lines = sorted(attrs)
    return {
        "attribute_lines": [j for j in lines for _ in attrs[j]],
        "attribute_keys": [k for j in lines for k in attrs[j]],
        "attribute_values": [v for j in lines for v in attrs[j].values()],
    }


def _unsparse(rec: dict[str, Any]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for j, k, v in zip(
        rec["attribute_lines"], rec["attribute_keys"], rec["attribute_values"], strict=True
    ):
        out.setdefault(j, {})[k] = v
    return out


def _log_batch_record(service: str, host: str, lines: list[Line]) -> dict[str, Any]:
    ts, levels, loggers, messages, traces, spans, excs, attrs = map(list, zip(*lines, strict=True))
    return {
        "service": service, "host": host, "timestamp_ms": ts[0],
        "timestamp_offsets_ms": [t - ts[0] for t in ts], "levels": levels,
        "loggers": loggers, "messages": messages, "trace_ids": traces, "span_ids": spans,
        "exceptions": excs, **_sparse({j: a for j, a in enumerate(attrs) if a}),
    }  # fmt: skip


def _log_columns(rec: dict[str, Any]) -> LogColumns:
    base = rec["timestamp_ms"]
    return LogColumns(
        rec["service"], rec["host"], [base + d for d in rec["timestamp_offsets_ms"]],
        rec["levels"], rec["loggers"], rec["messages"], rec["trace_ids"], rec["span_ids"],
        rec["exceptions"], _unsparse(rec),
    )  # fmt: skip


def _stored_batch_record(s: StoredColumns) -> dict[str, Any]:
    base = s.timestamps_ms[0]
    return {
        "service": s.service, "host": s.host, "observed_ms": NOW_MS, "event_id_base": 5_000,
        "line_indexes": s.line_indexes, "timestamp_ms": base,
        "timestamp_offsets_ms": [t - base for t in s.timestamps_ms], "levels": s.levels,
        "severities": s.severities, "loggers": s.loggers, "messages": s.messages,
        "trace_ids": s.trace_ids, "span_ids": s.span_ids, "exceptions": s.exceptions,
        "template_ids": s.template_ids, **_sparse(s.attributes),
    }  # fmt: skip


def _metric_columns(rec: dict[str, Any]) -> MetricColumns:
    return MetricColumns(
        rec["source"], rec["series"], rec["kinds"], rec["units"],
        np.array(rec["series_index"], np.int64), np.array(rec["timestamps_ms"], np.int64),
        np.array(rec["values"], np.float64),
    )  # fmt: skip


def _same_columns(a: MetricColumns, b: MetricColumns) -> bool:
    return all(
        np.array_equal(x, np.asarray(y)) if isinstance(x, np.ndarray) else x == y
        for x, y in zip(a, b, strict=True)
    )


def _sample(rec: dict[str, Any]) -> Sample:
    name, labels = rec["name"], rec["labels"]
    check_series(name, labels, LIMITS)
    check_point(rec["timestamp_ms"], rec["value"], NOW_MS, LIMITS)
    key = series_key(name, labels)
    return Sample(key, name, labels, rec["timestamp_ms"], rec["value"], rec["kind"], rec["unit"])


def _encoder(name: str, items: int, hand: Callable[[], bytes], fast: Callable[[], bytes]) -> Case:
    return Case(name, items, hand, fast, lambda: hand() == fast())


def _decoder(name: str, items: int, hand: Callable[[], Any], fast: Callable[[], Any]) -> Case:
    return Case(name, items, hand, fast, lambda: hand() == fast())


def cases(codec: AvroCodec | None = None) -> list[Case]:
    """Every hand codec on its representative record."""
    codec = codec or AvroCodec.from_directory()

    # MetricSample: SDK encode, worker decode (its series cached after the first message)
    series = make_series("http_requests_total", _labels(7), "COUNTER", "requests")
    s_enc = SampleEncoder(codec, source="sdk")
    s_bytes = s_enc.encode(series, NOW_MS, 123.5)
    s_dec = MetricSampleDecoder(codec)
    s_dec.decode(s_bytes, NOW_MS)

    # MetricBatch: worker and store decode, 500 samples of 100 series
    batch = {
        "source": "sdk", "series": [f"http_requests_total{{i={j}}}" for j in range(100)],
        "kinds": ["COUNTER"] * 100, "units": [""] * 100,
        "series_index": [k % 100 for k in range(BATCH_SAMPLES)],
        "timestamps_ms": [NOW_MS + 1000 * (k // 100) for k in range(BATCH_SAMPLES)],
        "values": [float(k) * 1.5 for k in range(BATCH_SAMPLES)],
    }  # fmt: skip
    b_bytes = codec.encode(BATCH, batch)
    b_dec = MetricBatchDecoder(codec)
    b_fast = _reader(codec, b_bytes, _metric_columns)

    # Aggregate: worker encode; evaluator and store decode (series cached)
    agg = _aggregate()
    a_enc = AggregateEncoder(codec)
    a_bytes = a_enc.encode(agg)
    a_dec = AggregateDecoder(codec)
    a_dec.decode(a_bytes)

    # LogRecord decode, StoredLog encode: the log agent, one record per message
    line = _log_lines(1)[0]
    log = {"timestamp_ms": line[0], "service": "checkout", "host": "web-3", "level": line[1],
           "logger": line[2], "message": line[3], "trace_id": line[4], "span_id": line[5],
           "exception": line[6], "attributes": line[7]}  # fmt: skip
    l_bytes = codec.encode(LOG_RECORD, log)
    l_dec = LogDecoder(codec)
    stored = {**log, "event_id": 987_654_321, "observed_ms": NOW_MS + 5, "severity": 9,
              "template_id": 17}  # fmt: skip
    st_enc = StoredLogEncoder(codec)

    # LogBatch encode (shipper), decode (log agent); StoredLogBatch encode (log agent)
    lines = _log_lines(BATCH_LINES)
    lb_enc = LogBatchEncoder(codec)
    lb_bytes = lb_enc.encode("checkout", "web-3", lines)
    lb_dec = LogBatchDecoder(codec)
    cols = lb_dec.decode(lb_bytes)
    kept = StoredColumns(
        cols.service, cols.host, list(range(cols.lines)), list(cols.timestamps_ms),
        list(cols.levels), [9 if lv == "info" else 17 for lv in cols.levels],
        list(cols.loggers), list(cols.messages), list(cols.trace_ids), list(cols.span_ids),
        list(cols.exceptions), cols.attributes, [k % 7 for k in range(cols.lines)],
    )  # fmt: skip
    sb_enc = StoredLogBatchEncoder(codec)

    def b_agree() -> bool:
        return _same_columns(b_dec.decode(b_bytes), b_fast())

    return [
        _encoder("MetricSample encode", 1, lambda: s_enc.encode(series, NOW_MS, 123.5),
                 _writer(codec, SAMPLE, lambda: sample_record(series, NOW_MS, 123.5, "sdk"))),
        _decoder("MetricSample decode", 1, lambda: s_dec.decode(s_bytes, NOW_MS),
                 _reader(codec, s_bytes, _sample)),
        Case("MetricBatch decode", BATCH_SAMPLES, lambda: b_dec.decode(b_bytes), b_fast,
             b_agree),
        _encoder("Aggregate encode", 1, lambda: a_enc.encode(agg),
                 _writer(codec, AGGREGATE, agg.to_record)),
        _decoder("Aggregate decode", 1, lambda: a_dec.decode(a_bytes),
                 _reader(codec, a_bytes, lambda r: Aggregate(**r))),
        _decoder("LogRecord decode", 1, lambda: l_dec.decode(l_bytes).record,
                 _reader(codec, l_bytes, dict)),
        _encoder("StoredLog encode", 1, lambda: st_enc.encode(stored),
                 _writer(codec, STORED_LOG, lambda: stored)),
        _encoder("LogBatch encode", BATCH_LINES, lambda: lb_enc.encode("checkout", "web-3", lines),
                 _writer(codec, LOG_BATCH, lambda: _log_batch_record("checkout", "web-3", lines))),
        _decoder("LogBatch decode", BATCH_LINES, lambda: lb_dec.decode(lb_bytes),
                 _reader(codec, lb_bytes, _log_columns)),
        _encoder("StoredLogBatch encode", BATCH_LINES, lambda: sb_enc.encode(kept, 5_000, NOW_MS),
                 _writer(codec, STORED_LOG_BATCH, lambda: _stored_batch_record(kept))),
    ]  # fmt: skip


def _best_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best of ``repeat`` runs of ``number`` calls, in µs per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / number * 1e6


def run(number: int = 20_000, repeat: int = 5, codec: AvroCodec | None = None) -> list[Row]:
    """Measure every case; a batch record (``items`` > 1) runs ``number // 50`` times."""
    rows = []
    for c in cases(codec):
        n = max(1, number // 50) if c.items > 1 else number
        rows.append(
            Row(c.name, c.items, _best_us(c.hand, n, repeat), _best_us(c.fastavro, n, repeat),
                c.agree())
        )  # fmt: skip
    return rows


def summary_line(rows: list[Row]) -> str:
    """``metricsample_encode_us=0.9/6.1 ...``: hand/fastavro µs per record."""
    return " ".join(
        f"{r.name.lower().replace(' ', '_')}_us={r.hand_us:.2f}/{r.fastavro_us:.2f}" for r in rows
    )
