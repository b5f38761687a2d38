"""The log agent's per-message path without Kafka: bytes in, encoded outputs out.

``LogProcessor.handle`` decodes one logs-topic value, feeds it to the partition's
``PartitionLogs`` (normalise, mine, count) and encodes what to publish. A ``LogRecord``
(``LogDecoder``) gives one ``StoredLog`` record; a ``LogBatch`` (``LogBatchDecoder``)
gives one ``StoredLogBatch`` with its kept lines, and each line that cannot be kept
as a ``Rejected`` (the line alone as a ``LogRecord``, for the dead-letter topic).
Both give ``LogTemplate`` events and counter samples, sent as one ``MetricBatch`` per
samples partition (each series in the partition its key hashes to, as the SDK places
them: the aggregation agent reads a few batches instead of a message per counter).
The agent sends them; the benchmark times exactly this path.

Row identity (``event_id``, UInt64 in the logs table, unique per stored line):

============  ==============================================================
source        bits
============  ==============================================================
LogRecord     ``partition << 48 | offset`` (partition < 2**14, offset < 2**48)
LogBatch      ``1 << 62 | partition << 52 | offset << 12 | index in batch``
              (partition < 1024, offset < 2**40, index < 4096)
============  ==============================================================

Bit 62 is clear in every single-record id, so the two never collide.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from monitoring.logs.analyzer import PartitionLogs, TemplateEvent
from monitoring.metrics.samples import Sample
from monitoring.streams.codec import AvroCodec
from monitoring.streams.log_batch import LogBatchDecoder, StoredLogBatchEncoder
from monitoring.streams.log_encoding import (
    LOG_RECORD,
    LOG_TEMPLATE,
    LogDecoder,
    StoredLogEncoder,
)
from monitoring.streams.partitioner import group_by_partition
from monitoring.streams.sample_encoding import BatchEncoder, SeriesRef

SOURCE = "log-agent"
Record = tuple[bytes, bytes]  # (key, value)


class Rejected(NamedTuple):
    """A line of a batch that cannot be kept: its index in the batch, why, and the line as a
    ``LogRecord`` (for the dead-letter topic)."""

    line: int
    reason: str
    detail: str
    value: bytes


class Encoded(NamedTuple):
    """What one message produces: the stored log or batch (None if no line was kept),
    template events and counter samples, each as (key, value); the service and
    template events themselves; the rejected lines of a batch; how many lines it held."""

    stored: Record | None
    templates: list[Record]
    samples: list[Record]
    service: str
    events: list[TemplateEvent]
    rejected: Sequence[Rejected] = ()
    lines: int = 1


def event_id(partition: int, offset: int) -> int:
    """Identity of a stored row: source partition and offset in one signed 64-bit long.

    >>> event_id(3, 17)
    844424930131985
    """
    return partition << 48 | offset


BATCH_FLAG = 1 << 62


def batch_event_id(partition: int, offset: int, index: int = 0) -> int:
    """Identity of line ``index`` of the batch at ``offset`` (see the module doc); with
    ``index`` 0 it is the base every line's index is or-ed into.

    >>> batch_event_id(3, 17, 5) == (1 << 62) + (3 << 52) + (17 << 12) + 5
    True
    """
    if not (0 <= partition < 1024 and 0 <= offset < 1 << 40 and 0 <= index < 4096):
        raise ValueError(f"no batch event id for partition {partition} offset {offset} "
                         f"index {index}: at most 1023, 2**40 - 1, 4095")  # fmt: skip
    return BATCH_FLAG | partition << 52 | offset << 12 | index


class LogProcessor:
    """Decode, process and encode; one instance per agent (codec caches shared)."""

    def __init__(self, codec: AvroCodec, samples_partitions: int) -> None:
        self.codec = codec
        self.samples_partitions = samples_partitions
        self.sample_batch = BatchEncoder(codec)
        self.decoder = LogDecoder(codec)
        self.stored = StoredLogEncoder(codec)
        self.batches = LogBatchDecoder(codec)
        self.stored_batch = StoredLogBatchEncoder(codec)

    def handle(
        self, logs: PartitionLogs, partition: int, offset: int, value: bytes | None, kafka_ms: int
    ) -> Encoded | None:
        """Raises DecodeError or InvalidLog for a bad message; None if already applied."""
        if logs.skip(offset):
            return None
        logs.seen(offset)
        if self.batches.accepts(value):
            assert isinstance(value, bytes)
            return self._handle_batch(logs, partition, offset, value, kafka_ms)
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

    def _handle_batch(
        self, logs: PartitionLogs, partition: int, offset: int, value: bytes, kafka_ms: int
    ) -> Encoded | None:
        cols, raw = self.batches.decode_raw(value)
        r = logs.process_batch(offset, cols, kafka_ms)
        if r is None:
            return None
        key = cols.service.encode()
        stored = None
        if r.stored is not None:
            base = batch_event_id(partition, offset)
            stored = (key, self.stored_batch.encode(r.stored, base, kafka_ms, raw))
        templates = [(key, self.encode_template(t)) for t in r.events] if r.events else []
        samples = self.encode_samples(r.samples) if r.samples else []
        rejected = [
            Rejected(i, e.reason, str(e), self.codec.encode(LOG_RECORD, cols.record(i)))
            for i, e in r.rejected
        ]
        return Encoded(stored, templates, samples, cols.service, r.events, rejected, cols.lines)

    def encode_template(self, t: TemplateEvent) -> bytes:
        return self.codec.encode(LOG_TEMPLATE, t._asdict())

    def encode_samples(self, samples: list[Sample]) -> list[Record]:
        """One ``MetricBatch`` per samples partition, keyed by its first series' key (so
        the producer's murmur2 placement puts it on that partition)."""
        items = [
            (SeriesRef(s.series, s.name, s.labels, s.kind, s.unit), s.timestamp_ms, s.value)
            for s in samples
        ]
        groups = group_by_partition(items, self.samples_partitions)
        encode = self.sample_batch.encode
        return [
            (group[0][0].key.encode(), encode(group, SOURCE)) for _, group in sorted(groups.items())
        ]
