"""Prediction / label contracts, the producer helper's validation, and the settings."""

from __future__ import annotations

import pytest

from monitoring.config import ConfigError, Settings
from monitoring.mlops.events import (
    LABEL,
    PREDICTION,
    InvalidModelEvent,
    label_from_record,
    prediction_from_record,
)
from monitoring.sdk.model_events import ModelEventsProducer
from monitoring.wire.codec import AvroCodec

T0 = 1_700_000_000_000


def test_both_schemas_round_trip_with_defaults() -> None:
    codec = AvroCodec.from_directory()
    p = {"prediction_id": "r1", "model": "m", "version": "1", "timestamp_ms": T0,
         "predicted_value": 2.5}  # fmt: skip
    rec = codec.decode(codec.encode(PREDICTION, p)).record
    assert rec == {**p, "predicted_class": None, "latency_ms": None, "features": {}, "labels": {}}
    assert prediction_from_record(rec).predicted_value == 2.5
    lab = codec.decode(codec.encode(LABEL, {"prediction_id": "r1", "timestamp_ms": T0})).record
    assert lab == {
        "prediction_id": "r1",
        "timestamp_ms": T0,
        "true_class": None,
        "true_value": None,
    }
    with pytest.raises(InvalidModelEvent, match="missing-label"):
        label_from_record(lab)


def test_producer_validates_and_keys_both_events_by_prediction_id() -> None:
    out = ModelEventsProducer(Settings.load(None), bootstrap_servers="127.0.0.1:1")
    sent: list[tuple[str, str, bytes]] = []
    out._send = lambda topic, key, value: sent.append((topic, key, value))  # type: ignore[method-assign]
    with pytest.raises(InvalidModelEvent, match="missing-prediction"):
        out.prediction("r1", "m", "1", latency_ms=3.0)
    with pytest.raises(InvalidModelEvent, match="reserved-label"):
        out.prediction("r1", "m", "1", predicted_class="a", labels={"version": "2"})
    with pytest.raises(InvalidModelEvent, match="missing-label"):
        out.label("r1")
    assert sent == []
    out.prediction("r1", "m", "1", predicted_class="a", features={"x": 1}, timestamp_ms=T0)
    out.label("r1", true_class="b", timestamp_ms=T0 + 5)
    assert [(t, k) for t, k, _ in sent] == [
        ("monitoring.models.predictions", "r1"),
        ("monitoring.models.labels", "r1"),
    ]
    codec = AvroCodec.from_directory()
    assert codec.decode(sent[0][2]).record["features"] == {"x": 1.0}
    assert codec.decode(sent[1][2]).record["true_class"] == "b"


def test_settings_name_a_bad_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings.load(None).model_metrics.drift_detector == "adwin"
    monkeypatch.setenv("MONITORING_MODEL_METRICS__DRIFT_DETECTOR", "kswin")
    with pytest.raises(ConfigError, match=r"model_metrics\.drift_detector"):
        Settings.load(None)
