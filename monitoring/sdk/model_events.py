"""Producer helper for applications that serve models: prediction and label events.

Example::

    with ModelEventsProducer() as events:
        events.prediction("req-81", "churn", "3", predicted_class="yes",
                          latency_ms=12.5, features={"age": 41, "tenure": 7})
        ...
        events.label("req-81", true_class="no")   # later, when the outcome is known

Both events are keyed by prediction id on confluent-kafka with
``partitioner=murmur2_random`` (Java's placement), so a prediction and its label land
in the same partition of ``models.predictions`` and ``models.labels`` and one worker
joins them. Events are validated before they are sent (``InvalidModelEvent`` names the
problem) and encoded with Avro single-object encoding (``schemas/prediction.v1.avsc``,
``schemas/model_label.v1.avsc``), so any language can produce them too.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer

from monitoring.config import Settings
from monitoring.mlops.events import LABEL, PREDICTION, label_from_record, prediction_from_record
from monitoring.runtime.kafka_client import client_config
from monitoring.runtime.topics import MODEL_LABELS, PREDICTIONS, topic_name
from monitoring.wire.codec import AvroCodec


class ModelEventsProducer:
    """Sends ``Prediction`` and ``ModelLabel`` events; ``failed`` counts lost ones."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        bootstrap_servers: str | None = None,
        producer_config: Mapping[str, Any] | None = None,
        codec: AvroCodec | None = None,
    ) -> None:
        settings = settings or Settings.load()
        k = settings.kafka
        if bootstrap_servers:
            k = k.model_copy(update={"bootstrap_servers": bootstrap_servers})
        conf: dict[str, Any] = {
            **client_config(k),
            "client.id": "monitoring-model-events",
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": k.max_message_bytes,
        }
        conf.update(producer_config or {})
        self.producer = Producer(conf)
        self.codec = codec or AvroCodec.from_directory()
        self.predictions_topic = topic_name(k, PREDICTIONS)
        self.labels_topic = topic_name(k, MODEL_LABELS)
        self.sent = 0
        self.failed = 0

    def prediction(
        self,
        prediction_id: str,
        model: str,
        version: str,
        *,
        predicted_class: str | None = None,
        predicted_value: float | None = None,
        latency_ms: float | None = None,
        features: Mapping[str, float] | None = None,
        labels: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Send one prediction (event time now unless ``timestamp_ms`` is given)."""
        rec = {
            "prediction_id": prediction_id,
            "model": model,
            "version": version,
            "timestamp_ms": _now(timestamp_ms),
            "predicted_class": predicted_class,
            "predicted_value": None if predicted_value is None else float(predicted_value),
            "latency_ms": None if latency_ms is None else float(latency_ms),
            "features": {str(k): float(v) for k, v in (features or {}).items()},
            "labels": {str(k): str(v) for k, v in (labels or {}).items()},
        }
        prediction_from_record(rec)
        self._send(self.predictions_topic, prediction_id, self.codec.encode(PREDICTION, rec))

    def label(
        self,
        prediction_id: str,
        *,
        true_class: str | None = None,
        true_value: float | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Send the true outcome of prediction ``prediction_id``."""
        rec = {
            "prediction_id": prediction_id,
            "timestamp_ms": _now(timestamp_ms),
            "true_class": true_class,
            "true_value": None if true_value is None else float(true_value),
        }
        label_from_record(rec)
        self._send(self.labels_topic, prediction_id, self.codec.encode(LABEL, rec))

    def _send(self, topic: str, key: str, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key.encode(), on_delivery=self._on_delivery)
                break
            except BufferError:  # librdkafka's queue is full: serve deliveries, retry
                self.producer.poll(0.05)
        self.producer.poll(0)

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for deliveries; returns how many events are still not acknowledged."""
        return int(self.producer.flush(timeout))

    def close(self, timeout: float = 10.0) -> int:
        return self.flush(timeout)

    def __enter__(self) -> ModelEventsProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            self.sent += 1
        else:
            self.failed += 1


def _now(timestamp_ms: int | None) -> int:
    return int(time.time() * 1000) if timestamp_ms is None else int(timestamp_ms)
