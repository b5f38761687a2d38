"""Where agents write: a librdkafka producer with flush-or-fail, and dead letters.

``Outputs.send`` enqueues without blocking the event loop (about 1 µs a record, against
tens of µs through Faust's aiokafka producer); ``Outputs.flush`` waits until the broker
acknowledged everything so far, which an agent does before it checkpoints and acks its
sources. A record librdkafka gives up on makes the next flush raise: an agent must then
stop rather than ack, so that a restart replays it.

``dead_letter_headers`` is the one format of the dead-letter topic: the original bytes
under the original key, and why, where from and at which stage in headers. A dead
letter always fits the message limit (``fit_dead_letter``): each header value is capped
at ``MAX_HEADER_BYTES``, and a payload that would not fit beside its key and headers is
cut to its head, with ``x-truncated: <original size>`` and ``x-payload-sha256`` (of the
whole payload). Sending one never raises: a dead letter the producer refuses or the
broker fails is logged and counted (``dead_letters_failed``), and processing goes on,
as the message is invalid either way.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer
from faust.types import Message

from monitoring.config import KafkaSettings
from monitoring.log import get_logger
from monitoring.runtime.kafka_client import client_config

log = get_logger("outputs")
Headers = list[tuple[str, str | bytes | None]]  # as confluent-kafka types them
MAX_HEADER_BYTES = 4096  # each dead-letter header value at most
# Kept free beside key, value and headers: record and batch framing, and what lz4 adds
# to an incompressible payload (n/255 + 16), which the broker counts against its limit.
RECORD_OVERHEAD_BYTES = 1024
POLL_S = 0.1  # a dead letter's wait for a full queue to drain, each turn


def producer_config(kafka: KafkaSettings, on_delivery: Callable[..., Any]) -> dict[str, Any]:
    """The librdkafka settings of every output producer: idempotent, ``acks=all``, lz4,
    Java's murmur2 placement for keyed records, delivery reports for failures only (a
    success costs no Python call in ``poll``)."""
    return client_config(
        kafka,
        **{
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": kafka.max_message_bytes,
            "delivery.report.only.error": True,
            "on_delivery": on_delivery,
        },
    )


def consumer_config(kafka: KafkaSettings, group: str, **extra: Any) -> dict[str, Any]:
    """The librdkafka settings of every plain consumer of the project (the store, the
    alert evaluator, the notifier, state readers, offset probes): no auto-commit (each
    commits what it stored, or keeps its positions in its state), then ``extra``.

    >>> consumer_config(KafkaSettings(), "g", **{"fetch.wait.max.ms": 20})["group.id"]
    'g'
    """
    return client_config(kafka, **{"group.id": group, "enable.auto.commit": False, **extra})


class OutputsLost(RuntimeError):
    """The broker refused or timed out records for good; sources must not be acked."""


class Outputs:
    """An agent's producer: keyed records with Java's murmur2 placement, idempotent."""

    def __init__(self, kafka: KafkaSettings, flush_timeout_s: float = 10.0, **config: Any) -> None:
        # ``config``: further librdkafka settings (a transactional id: ``runtime.lease``)
        self.producer = Producer({**producer_config(kafka, self._on_delivery), **config})
        self.flush_timeout_s = flush_timeout_s
        self.max_message_bytes = kafka.max_message_bytes
        self.failed = 0
        self.dead_letters_failed = 0  # dead letters refused or lost: counted, never fatal

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """Enqueue one record; waits (without blocking the loop) only if the queue is full."""
        while True:
            try:
                self._produce(topic, key, value, partition, headers)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                self.producer.poll(0)
                await asyncio.sleep(0.01)

    async def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        last_headers: Headers | None = None,
    ) -> None:
        """``send`` each (key, value) in order, ``last_headers`` on the last one; one
        call for a run of records, awaiting only when librdkafka's queue is full."""
        last = len(records) - 1
        for i, (key, value) in enumerate(records):
            headers = last_headers if i == last else None
            try:
                self._produce(topic, key, value, partition, headers)
            except BufferError:
                await self.send(topic, key, value, partition, headers)

    def produce_now(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Enqueue one record without awaiting (``BufferError`` when the queue is full),
        for callbacks outside the event loop's flow (the notifier's delivery log)."""
        self._produce(topic, key, value, None, None)

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers | None,
        on_delivery: Callable[[KafkaError | None, Any], None] | None = None,
    ) -> None:
        extra: dict[str, Any] = {} if on_delivery is None else {"on_delivery": on_delivery}
        if partition is None:
            self.producer.produce(topic, value, key, headers=headers, **extra)
        else:
            self.producer.produce(topic, value, key, partition, headers=headers, **extra)

    async def dead_letter(
        self,
        topic: str,
        msg: Message,
        reason: str,
        detail: str,
        stage: str,
        rejected: list[int] | None = None,
    ) -> None:
        """Send a consumed message's original bytes to the dead-letter ``topic``, with why.

        Never raises: the record is cut to fit the message limit (``fit_dead_letter``),
        and a dead letter librdkafka refuses, now or at delivery, is logged and counted
        in ``dead_letters_failed`` (it does not fail ``flush``)."""
        try:
            log.warning(
                "dead_letter", stage=stage, reason=reason, error=detail[:200],
                topic=msg.topic, partition=msg.partition, offset=msg.offset,
            )  # fmt: skip
            headers = dead_letter_headers(
                reason, detail, msg.topic, msg.partition, msg.offset, stage, rejected
            )
            key = msg.key.encode() if isinstance(msg.key, str) else msg.key
            value = msg.value if isinstance(msg.value, bytes) else None
        except Exception as e:
            self.dead_letters_failed += 1
            log.error("dead_letter_failed", stage=stage, reason=reason, error=repr(e)[:300])
            return
        await self.send_dead_letter(topic, key, value, headers)

    async def send_dead_letter(
        self, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> bool:
        """Send a dead letter (headers from ``dead_letter_headers`` plus any): cut to fit
        the message limit (``fit_dead_letter``), never raising. A dead letter librdkafka
        refuses, now or at delivery, is logged and counted in ``dead_letters_failed``
        and does not fail ``flush``. False if it was refused now."""
        try:
            key, value, headers = fit_dead_letter(key, value, headers, self.max_message_bytes)
            while True:
                try:
                    self._produce(topic, key, value, None, headers, self._on_dead_letter)
                    return True
                except BufferError:  # librdkafka's queue is full: let it drain
                    self.producer.poll(0)
                    await asyncio.sleep(0.01)
        except Exception as e:
            self.dead_letters_failed += 1
            log.error("dead_letter_failed", topic=topic, error=repr(e)[:300])
            return False

    def poll(self) -> None:
        """Serve delivery callbacks; call it regularly (once per source message)."""
        self.producer.poll(0)

    async def flush(self) -> bool:
        """True once everything sent so far is acknowledged; False if the broker is slow.

        Raises OutputsLost if any record failed for good.
        """
        left = await asyncio.to_thread(self.producer.flush, self.flush_timeout_s)
        if self.failed:
            raise OutputsLost(f"{self.failed} records failed to deliver")
        if left:
            log.warning("outputs_pending", messages=left)
        return not left

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            log.error("delivery_failed", error=str(err))

    def _on_dead_letter(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.dead_letters_failed += 1
            log.error("dead_letter_failed", error=str(err))


def dead_letter_headers(
    reason: str,
    detail: str,
    topic: str,
    partition: int,
    offset: int,
    stage: str,
    rejected: list[int] | None = None,
) -> Headers:
    """Headers of a dead letter: ``x-reason``, ``x-error``, ``x-source-*``, ``x-stage``,
    and ``x-rejected-samples`` (indices) when only part of a batch was bad.

    >>> dict(dead_letter_headers("truncated", "3 bytes", "t", 1, 7, "aggregation"))["x-reason"]
    b'truncated'
    """
    headers: Headers = [
        ("x-reason", reason.encode()),
        ("x-error", detail[:2000].encode("utf-8", "replace")),
        ("x-source-topic", topic.encode()),
        ("x-source-partition", str(partition).encode()),
        ("x-source-offset", str(offset).encode()),
        ("x-stage", stage.encode()),
    ]
    if rejected is not None:
        headers.append(("x-rejected-samples", _index_list(rejected)))
    return cap_headers(headers)


def _index_list(indices: list[int], cap: int = MAX_HEADER_BYTES) -> bytes:
    """Comma-separated indices within ``cap`` bytes: whole numbers only, then ``,...``.

    >>> _index_list([1, 22, 333], cap=7)
    b'1,...'
    """
    text = ",".join(map(str, indices)).encode()
    if len(text) <= cap:
        return text
    return text[: text.rfind(b",", 0, cap - 3)] + b",..."


def cap_headers(headers: Headers, cap: int = MAX_HEADER_BYTES) -> Headers:
    """Each header value as bytes of at most ``cap`` bytes (the head of a longer one)."""
    out: Headers = []
    for name, value in headers:
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        out.append((name, value if value is None else value[:cap]))
    return out


def headers_size(headers: Headers) -> int:
    """Bytes the headers take in a record (names, values, their varint lengths)."""
    return sum(len(n.encode()) + len(v or b"") + 10 for n, v in cap_headers(headers, 1 << 62))


def fit_dead_letter(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    max_message_bytes: int,
) -> tuple[bytes | None, bytes | None, Headers]:
    """(key, value, headers) of a dead letter that fits ``max_message_bytes``.

    Header values are capped (``MAX_HEADER_BYTES``); a value that does not fit beside
    key, headers and ``RECORD_OVERHEAD_BYTES`` keeps its head, and ``x-truncated`` (the
    original size) and ``x-payload-sha256`` (of the original) are added; a key that
    leaves no room is cut the same way (``x-key-truncated``).

    >>> k, v, h = fit_dead_letter(b"k", b"x" * 5000, [("x-reason", b"r")], 4096)
    >>> len(v) < 4096 - 1024, dict(h)["x-truncated"]
    (True, b'5000')
    """
    headers = cap_headers(headers)
    limit = max_message_bytes - RECORD_OVERHEAD_BYTES - max_message_bytes // 128
    room = limit - len(key or b"") - headers_size(headers)
    if value is not None and len(value) > room:
        extra: Headers = [
            ("x-truncated", str(len(value)).encode()),
            ("x-payload-sha256", hashlib.sha256(value).hexdigest().encode()),
        ]
        room -= headers_size(extra)
        headers += extra
        value = value[: max(room, 0)]
    if key is not None and room < 0:  # the key alone is too large: keep its head too
        cut = ("x-key-truncated", str(len(key)).encode())
        headers.append(cut)
        key = key[: max(0, len(key) + room - headers_size([cut]))]
    return key, value, headers


class DeadLetters:
    """Dead letters from a process outside Faust (the store): ``send`` enqueues and never
    raises, ``flush`` waits for the broker and never raises either; what failed is logged
    and counted in ``failed``. While the producer's queue is full, ``send`` waits up to
    ``wait_s`` for it to drain (0: refuses at once, for a caller that must not block);
    ``max_queue_kbytes`` bounds the queue (librdkafka's default is 1 GiB)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        stage: str,
        producer: Any = None,
        wait_s: float = 10.0,
        max_queue_kbytes: int | None = None,
    ) -> None:
        if producer is None:
            conf = producer_config(kafka, self._on_delivery)
            if max_queue_kbytes is not None:
                conf["queue.buffering.max.kbytes"] = max_queue_kbytes
            producer = Producer(conf)
        self.producer = producer
        self.topic = topic
        self.stage = stage
        self.wait_s = wait_s
        self.max_message_bytes = kafka.max_message_bytes
        self.sent = self.failed = 0

    def send(
        self,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
        source: tuple[str, int, int],
    ) -> bool:
        """Enqueue the dead letter of the message at ``source`` (topic, partition, offset);
        False (logged, counted) if the producer refused it."""
        topic, partition, offset = source
        log.warning("dead_letter", stage=self.stage, reason=reason, error=detail[:200],
                    topic=topic, partition=partition, offset=offset)  # fmt: skip
        try:
            headers = dead_letter_headers(reason, detail, topic, partition, offset, self.stage)
            key, value, headers = fit_dead_letter(key, value, headers, self.max_message_bytes)
            for attempt in range(1 + int(self.wait_s / POLL_S)):
                if attempt:  # the queue was full: let it drain
                    self.producer.poll(POLL_S)
                try:
                    self.producer.produce(self.topic, value, key, headers=headers)
                    self.sent += 1
                    return True
                except BufferError:
                    pass
            raise BufferError("dead-letter queue stayed full")
        except Exception as e:
            self.failed += 1
            log.error("dead_letter_failed", stage=self.stage, reason=reason, error=repr(e)[:300],
                      topic=topic, partition=partition, offset=offset)  # fmt: skip
            return False

    def poll(self) -> None:
        """Serve the delivery reports due, without waiting (frees the queue)."""
        try:
            self.producer.poll(0)
        except Exception as e:
            log.error("dead_letter_poll_failed", error=repr(e)[:300])

    def flush(self, timeout_s: float = 10.0) -> bool:
        """True once every dead letter sent so far was acknowledged or failed for good."""
        try:
            left = int(self.producer.flush(timeout_s))
        except Exception as e:
            log.error("dead_letter_flush_failed", error=repr(e)[:300])
            return False
        if left:
            log.warning("dead_letters_pending", messages=left)
        return not left

    def close(self) -> None:
        self.flush()

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            log.error("dead_letter_failed", stage=self.stage, error=str(err))
