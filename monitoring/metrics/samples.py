"""Metric samples as values, the series key, and the validation every consumer applies.

Pure Python: no Kafka, no ClickHouse. The decoded Avro records (MetricSample or
MetricBatch) become ``Sample`` values here, or an ``InvalidSample`` naming the reason.

>>> series_key("cpu_usage", {"host": "a", "core": "0"})
'cpu_usage{core="0",host="a"}'
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

SAMPLE = "monitoring.MetricSample"
BATCH = "monitoring.MetricBatch"

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class InvalidSample(ValueError):
    """A sample breaks the contract; ``reason`` is a short machine-friendly cause."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Sample(NamedTuple):
    """One validated sample of one series."""

    series: str
    name: str
    labels: Mapping[str, str]
    timestamp_ms: int
    value: float
    kind: str = "GAUGE"
    unit: str = ""


@dataclass(frozen=True)
class Limits:
    """What a sample may carry; beyond these it goes to the dead-letter topic.

    Timestamps must lie in [min_timestamp_ms, now + max_future_skew_ms].
    """

    max_labels: int = 32
    max_label_name_len: int = 128
    max_label_value_len: int = 2048
    max_name_len: int = 256
    min_timestamp_ms: int = 946_684_800_000  # 2000-01-01
    max_future_skew_ms: int = 3_600_000


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """Prometheus-style series identity: ``name{k="v",...}`` with labels sorted by name."""
    if not labels:
        return name
    inner = ",".join(
        f'{k}="{v}"' if '"' not in v and "\\" not in v and "\n" not in v else f'{k}="{_escape(v)}"'
        for k, v in sorted(labels.items())
    )
    return f"{name}{{{inner}}}"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def check_series(name: str, labels: Mapping[str, str], limits: Limits) -> None:
    """Raise InvalidSample if the metric name or labels break the contract."""
    if not name or len(name) > limits.max_name_len or not _NAME.match(name):
        raise InvalidSample(
            "bad-name", f"metric name {name[:80]!r} is not [a-zA-Z_:][a-zA-Z0-9_:]*"
        )
    if len(labels) > limits.max_labels:
        raise InvalidSample("too-many-labels", f"{len(labels)} labels, limit {limits.max_labels}")
    for k, v in labels.items():
        if len(k) > limits.max_label_name_len or not _LABEL.match(k) or k.startswith("__"):
            raise InvalidSample("bad-label-name", f"label name {k[:80]!r}")
        if len(v) > limits.max_label_value_len:
            raise InvalidSample(
                "label-too-long",
                f"label {k} has {len(v)} chars, limit {limits.max_label_value_len}",
            )


def check_point(timestamp_ms: int, value: float, now_ms: int, limits: Limits) -> None:
    """Raise InvalidSample for non-finite values or absurd timestamps."""
    if not math.isfinite(value):
        raise InvalidSample("non-finite-value", f"value {value!r}")
    if timestamp_ms < limits.min_timestamp_ms:
        raise InvalidSample("timestamp-too-old", f"timestamp_ms {timestamp_ms} is before 2000")
    if timestamp_ms > now_ms + limits.max_future_skew_ms:
        raise InvalidSample(
            "timestamp-in-future",
            f"timestamp_ms {timestamp_ms} is {timestamp_ms - now_ms} ms ahead",
        )


class BatchResult(NamedTuple):
    """Valid samples of one event, and (index, InvalidSample) for the rejected ones."""

    samples: list[Sample]
    rejected: list[tuple[int, InvalidSample]]


def samples_from_record(
    record_name: str, record: dict[str, Any], now_ms: int, limits: Limits = Limits()
) -> BatchResult:
    """Turn a decoded MetricSample or MetricBatch into samples, rejecting bad ones.

    A batch whose arrays disagree in length, or that points at a missing series, is
    rejected whole (``InvalidSample`` raised); bad points inside a good batch are
    returned in ``rejected`` and the rest are kept.
    """
    if record_name == SAMPLE:
        name, labels = record["name"], record["labels"]
        check_series(name, labels, limits)
        ts, value = record["timestamp_ms"], record["value"]
        check_point(ts, value, now_ms, limits)
        s = Sample(
            series_key(name, labels), name, labels, ts, value, record["kind"], record["unit"]
        )
        return BatchResult([s], [])
    if record_name == BATCH:
        return _from_batch(record, now_ms, limits)
    raise InvalidSample("wrong-record", f"{record_name} is not a metric sample or batch")


def _from_batch(record: dict[str, Any], now_ms: int, limits: Limits) -> BatchResult:
    descriptors = record["series"]
    index, stamps, values = record["series_index"], record["timestamps_ms"], record["values"]
    if not (len(index) == len(stamps) == len(values)):
        raise InvalidSample(
            "batch-length-mismatch",
            f"series_index {len(index)}, timestamps_ms {len(stamps)}, values {len(values)}",
        )
    keyed: list[tuple[str, str, Mapping[str, str], str, str] | InvalidSample] = []
    for d in descriptors:
        try:
            check_series(d["name"], d["labels"], limits)
            keyed.append(
                (series_key(d["name"], d["labels"]), d["name"], d["labels"], d["kind"], d["unit"])
            )
        except InvalidSample as e:
            keyed.append(e)
    n_series = len(keyed)
    out: list[Sample] = []
    rejected: list[tuple[int, InvalidSample]] = []
    lo, hi = limits.min_timestamp_ms, now_ms + limits.max_future_skew_ms
    isfinite = math.isfinite
    for i, (si, ts, v) in enumerate(zip(index, stamps, values, strict=True)):
        if not 0 <= si < n_series:
            raise InvalidSample(
                "bad-series-index", f"sample {i} points at series {si} of {n_series}"
            )
        desc = keyed[si]
        if isinstance(desc, InvalidSample):
            rejected.append((i, desc))
        elif lo <= ts <= hi and isfinite(v):
            out.append(Sample(desc[0], desc[1], desc[2], ts, v, desc[3], desc[4]))
        else:
            try:
                check_point(ts, v, now_ms, limits)
            except InvalidSample as e:
                rejected.append((i, e))
    return BatchResult(out, rejected)
