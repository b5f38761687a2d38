"""Prediction and label events as values, validated from decoded Avro records.

>>> p = prediction_from_record({"prediction_id": "p1", "model": "churn", "version": "3",
...     "timestamp_ms": 1_700_000_000_000, "predicted_class": "yes", "latency_ms": 4.5,
...     "features": {"age": 41.0}})
>>> p.series_labels
{'model': 'churn', 'version': '3'}
>>> label_from_record({"prediction_id": "p1", "timestamp_ms": 1_700_000_060_000,
...     "true_class": "no"}).true_class
'no'
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

from monitoring.metrics.samples import InvalidSample, Limits, check_series

PREDICTION = "monitoring.Prediction"
LABEL = "monitoring.ModelLabel"
RESERVED_LABELS = frozenset({"model", "version", "feature", "partition"})
_LIMITS = Limits()
_MAX_ID_LEN = 512


class InvalidModelEvent(ValueError):
    """A prediction or label breaks the contract; ``reason`` is short and machine-friendly."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Prediction(NamedTuple):
    """One prediction of one model version (``schemas/prediction.v1.avsc``)."""

    prediction_id: str
    model: str
    version: str
    timestamp_ms: int
    predicted_class: str | None = None
    predicted_value: float | None = None
    latency_ms: float | None = None
    features: Mapping[str, float] = {}
    labels: Mapping[str, str] = {}

    @property
    def series_labels(self) -> dict[str, str]:
        """Labels of every series this prediction feeds: model, version and its extras."""
        return {**self.labels, "model": self.model, "version": self.version}


class Label(NamedTuple):
    """The true outcome of one prediction (``schemas/model_label.v1.avsc``)."""

    prediction_id: str
    timestamp_ms: int
    true_class: str | None = None
    true_value: float | None = None


def _id(rec: Mapping[str, Any]) -> str:
    pid = rec.get("prediction_id")
    if not isinstance(pid, str) or not pid or len(pid) > _MAX_ID_LEN:
        raise InvalidModelEvent("bad-prediction-id", f"prediction_id {str(pid)[:80]!r}")
    return pid


def _finite(name: str, v: float | None) -> float | None:
    if v is not None and not math.isfinite(v):
        raise InvalidModelEvent("non-finite-value", f"{name} is {v!r}")
    return v


def prediction_from_record(rec: Mapping[str, Any]) -> Prediction:
    """A validated ``Prediction``; raises InvalidModelEvent naming what is wrong."""
    pid = _id(rec)
    model, version = rec.get("model"), rec.get("version")
    if not model or not version:
        raise InvalidModelEvent(
            "missing-model", f"prediction {pid!r}: model and version are required"
        )
    if rec.get("predicted_class") is None and rec.get("predicted_value") is None:
        raise InvalidModelEvent(
            "missing-prediction", f"prediction {pid!r}: set predicted_class or predicted_value"
        )
    labels = dict(rec.get("labels") or {})
    reserved = RESERVED_LABELS.intersection(labels)
    if reserved:
        raise InvalidModelEvent(
            "reserved-label", f"labels {sorted(reserved)} are set by the monitor"
        )
    features = dict(rec.get("features") or {})
    for name, v in features.items():
        _finite(f"feature {name!r}", v)
    p = Prediction(
        pid, model, version, int(rec["timestamp_ms"]), rec.get("predicted_class"),
        _finite("predicted_value", rec.get("predicted_value")),
        _finite("latency_ms", rec.get("latency_ms")), features, labels,
    )  # fmt: skip
    try:
        check_series("model_feature_drift", {**p.series_labels, "feature": "f"}, _LIMITS)
        for name in features:
            check_series("model_feature_drift", {"feature": name}, _LIMITS)
    except InvalidSample as e:
        raise InvalidModelEvent(e.reason, e.detail) from None
    return p


def label_from_record(rec: Mapping[str, Any]) -> Label:
    """A validated ``Label``; raises InvalidModelEvent naming what is wrong."""
    pid = _id(rec)
    if rec.get("true_class") is None and rec.get("true_value") is None:
        raise InvalidModelEvent("missing-label", f"label {pid!r}: set true_class or true_value")
    return Label(
        pid, int(rec["timestamp_ms"]), rec.get("true_class"),
        _finite("true_value", rec.get("true_value")),
    )  # fmt: skip
