"""The log agent's per-message path without Kafka: bytes in, encoded outputs out.

``LogProcessor.handle`` decodes one logs-topic value (``LogDecoder``), feeds it to the
partition's ``PartitionLogs`` (normalise, mine, count) and encodes what to publish:
the ``StoredLog`` record, ``LogTemplate`` events and ``MetricSample`` counters. The
agent sends them; the benchmark times exactly this path.
"""

from __future__ import annotations

from typing import NamedTuple

from monitoring.logs.analyzer import PartitionLogs, TemplateEvent
from monitoring.metrics.samples import SAMPLE, Sample
from monitoring.streams.codec import AvroCodec
from monitoring.streams.log_encoding import LOG_TEMPLATE, LogDecoder, StoredLogEncoder

SOURCE = "log-agent"
Record = tuple[bytes, bytes]  # (key, value)


class Encoded(NamedTuple):
    """What one message produces: the stored log, template events and counter
    samples, each as (key, value); and the service and template events themselves."""

    stored: Record
    templates: list[Record]
    samples: list[Record]
    service: str
    events: list[TemplateEvent]


def event_id(partition: int, offset: int) -> int:
    """Identity of a stored row: source partition and offset in one signed 64-bit long.

    >>> event_id(3, 17)
    844424930131985
    """
    return partition << 48 | offset


class LogProcessor:
    """Decode, process and encode; one instance per agent (codec caches shared)."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self.decoder = LogDecoder(codec)
        self.stored = StoredLogEncoder(codec)

    def handle(
        self, logs: PartitionLogs, partition: int, offset: int, value: bytes | None, kafka_ms: int
    ) -> Encoded | None:
        """Raises DecodeError or InvalidLog for a bad message; None if already applied."""
        if logs.skip(offset):
            return None
        logs.seen(offset)
        decoded = self.decoder.decode(value)
        r = logs.process(offset, decoded.record, kafka_ms, decoded.utf8_replaced)
        if r is None:
            return None
        e = r.entry
        key = e.service.encode()
        stored = self.stored.encode_entry(event_id(partition, offset), kafka_ms, r.template_id, *e)
        templates = [(key, self.encode_template(t)) for t in r.events] if r.events else []
        samples = self.encode_samples(r.samples) if r.samples else []
        return Encoded((key, stored), templates, samples, e.service, r.events)

    def encode_template(self, t: TemplateEvent) -> bytes:
        return self.codec.encode(LOG_TEMPLATE, t._asdict())

    def encode_samples(self, samples: list[Sample]) -> list[Record]:
        """MetricSample records keyed by series key (Java placement by the producer)."""
        return [
            (
                s.series.encode(),
                self.codec.encode(
                    SAMPLE,
                    {
                        "name": s.name,
                        "value": s.value,
                        "timestamp_ms": s.timestamp_ms,
                        "labels": dict(s.labels),
                        "kind": s.kind,
                        "unit": s.unit,
                        "source": SOURCE,
                    },
                ),
            )
            for s in samples
        ]
