"""The log agent's per-message path without Kafka: bytes in, encoded outputs out.

``LogProcessor.handle`` decodes one logs-topic value, feeds it to the partition's
``PartitionLogs`` (normalise, mine, count) and encodes what to publish. A ``LogRecord``
(``LogDecoder``) gives one ``StoredLog`` record; a ``LogBatch`` (``LogBatchDecoder``)
gives one ``StoredLogBatch`` with its kept lines, and each line that cannot be kept
as a ``Rejected`` (the line alone as a ``LogRecord``, for the dead-letter topic).
Both give ``LogTemplate`` events and counter samples, sent as one ``MetricBatch`` per
samples partition (each series in the partition its key hashes to, as the SDK places
them: the aggregation agent reads a few batches instead of a message per counter),
of at most ``MAX_BATCH_SAMPLES`` samples each. The agent sends them; the benchmark
times exactly this path.

Every output fits the message limit (``max_message_bytes``, the agent's
``kafka.max_message_bytes``), so that a produce never fails on size: a value over
``input_limit`` (the limit less ``OUTPUT_MARGIN_BYTES``) is rejected before it
changes any state (``DecodeError("oversized")``, dead-lettered); template events (a
template is at most 5 x ``max_template_chars``) and sample batches are bounded; a
stored record or batch is its input plus a few bytes per line, except for a batch
of thousands of lines that each gain flags (``monitoring.level_original`` and the
like): a stored output over ``output_limit`` is not sent, ``Encoded.oversized`` is
set and the agent dead-letters the message (reason ``oversized``), its lines still
counted and mined.

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
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.log_batch import LogBatchDecoder, StoredLogBatchEncoder
from monitoring.wire.log_encoding import (
    LOG_RECORD,
    LOG_TEMPLATE,
    LogDecoder,
    StoredLogEncoder,
)
from monitoring.wire.partitioner import group_by_partition
from monitoring.wire.sample_encoding import BatchEncoder, SeriesRef

SOURCE = "log-agent"
Record = tuple[bytes, bytes]  # (key, value)
MAX_BATCH_SAMPLES = 1000  # per MetricBatch: a few hundred bytes a series at most
OUTPUT_MARGIN_BYTES = 128 * 1024


def input_limit(max_message_bytes: int) -> int:
    """The largest logs-topic value the agent processes: the limit less
    ``OUTPUT_MARGIN_BYTES`` (an eighth of it, for a limit under 1 MiB).

    >>> input_limit(4 * 1024 * 1024), input_limit(64 * 1024)
    (4063232, 57344)
    """
    return max_message_bytes - min(OUTPUT_MARGIN_BYTES, max_message_bytes // 8)


def output_limit(max_message_bytes: int) -> int:
    """The largest key + value the agent sends: room left for the record's framing and
    headers, and what lz4 adds to an incompressible value (as ``outputs.fit_dead_letter``).

    >>> output_limit(4 * 1024 * 1024)
    4160512
    """
    return max_message_bytes - 1024 - max_message_bytes // 128


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
    oversized: int = 0  # bytes of a stored output too large to send (then ``stored`` None)


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

    def __init__(
        self, codec: AvroCodec, samples_partitions: int, max_message_bytes: int | None = None
    ) -> None:
        self.codec = codec
        self.max_value_bytes = None if max_message_bytes is None else input_limit(max_message_bytes)
        self.max_output_bytes = (
            1 << 62 if max_message_bytes is None else output_limit(max_message_bytes)
        )
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
        limit = self.max_value_bytes
        if limit is not None and isinstance(value, bytes) and len(value) > limit:
            raise DecodeError("oversized", f"{len(value)} bytes, at most {limit}")
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
        if len(key) + len(stored) > self.max_output_bytes:
            return Encoded(None, templates, samples, e.service, r.events, (), 1, len(stored))
        return Encoded((key, stored), templates, samples, e.service, r.events)

    def _handle_batch(
        self, logs: PartitionLogs, partition: int, offset: int, value: bytes, kafka_ms: int
    ) -> Encoded | None:
        cols, raw = self.batches.decode_raw(value)
        r = logs.process_batch(offset, cols, kafka_ms)
        if r is None:
            return None
        key = cols.service.encode()
        stored: Record | None = None
        oversized = 0
        if r.stored is not None:
            base = batch_event_id(partition, offset)
            value = self.stored_batch.encode(r.stored, base, kafka_ms, raw)
            if len(key) + len(value) > self.max_output_bytes:
                oversized = len(value)
            else:
                stored = (key, value)
        templates = [(key, self.encode_template(t)) for t in r.events] if r.events else []
        samples = self.encode_samples(r.samples) if r.samples else []
        rejected = [
            Rejected(i, e.reason, str(e), self.codec.encode(LOG_RECORD, cols.record(i)))
            for i, e in r.rejected
        ]
        return Encoded(
            stored, templates, samples, cols.service, r.events, rejected, cols.lines, oversized
        )

    def encode_template(self, t: TemplateEvent) -> bytes:
        return self.codec.encode(LOG_TEMPLATE, t._asdict())

    def encode_samples(self, samples: list[Sample]) -> list[Record]:
        """One ``MetricBatch`` per samples partition (per ``MAX_BATCH_SAMPLES`` samples of
        it), keyed by its first series' key (so the producer's murmur2 placement puts
        it on that partition)."""
        items = [
            (SeriesRef(s.series, s.name, s.labels, s.kind, s.unit), s.timestamp_ms, s.value)
            for s in samples
        ]
        groups = group_by_partition(items, self.samples_partitions)
        encode = self.sample_batch.encode
        n = MAX_BATCH_SAMPLES
        return [
            (group[i][0].key.encode(), encode(group[i : i + n], SOURCE))
            for _, group in sorted(groups.items())
            for i in range(0, len(group), n)
        ]
