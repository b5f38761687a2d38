"""Where agents write: a librdkafka producer with flush-or-fail, and dead letters.

``Outputs.send`` enqueues without blocking the event loop (about 1 µs a record, against
tens of µs through Faust's aiokafka producer); ``Outputs.flush`` waits until the broker
acknowledged everything so far, which an agent does before it checkpoints and acks its
sources. A record librdkafka gives up on makes the next flush raise: an agent must then
stop rather than ack, so that a restart replays it.

``dead_letter_headers`` is the one format of the dead-letter topic: the original bytes
under the original key, and why, where from and at which stage in headers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, Producer
from faust.types import Message

from monitoring.config import KafkaSettings
from monitoring.log import get_logger

log = get_logger("outputs")
Headers = list[tuple[str, str | bytes | None]]  # as confluent-kafka types them


class OutputsLost(RuntimeError):
    """The broker refused or timed out records for good; sources must not be acked."""


class Outputs:
    """An agent's producer: keyed records with Java's murmur2 placement, idempotent."""

    def __init__(self, kafka: KafkaSettings, flush_timeout_s: float = 10.0) -> None:
        self.producer = Producer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "partitioner": "murmur2_random",  # Java's placement for keyed records
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "message.max.bytes": kafka.max_message_bytes,
                # reports for failures only: a success costs no Python call in poll()
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,
            }
        )
        self.flush_timeout_s = flush_timeout_s
        self.failed = 0

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

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers | None,
    ) -> None:
        if partition is None:
            self.producer.produce(topic, value, key, headers=headers)
        else:
            self.producer.produce(topic, value, key, partition, headers=headers)

    async def dead_letter(
        self,
        topic: str,
        msg: Message,
        reason: str,
        detail: str,
        stage: str,
        rejected: list[int] | None = None,
    ) -> None:
        """Send a consumed message's original bytes to the dead-letter ``topic``, with why."""
        log.warning(
            "dead_letter", stage=stage, reason=reason, error=detail[:200],
            topic=msg.topic, partition=msg.partition, offset=msg.offset,
        )  # fmt: skip
        headers = dead_letter_headers(
            reason, detail, msg.topic, msg.partition, msg.offset, stage, rejected
        )
        value = msg.value if isinstance(msg.value, bytes) else None
        await self.send(topic, msg.key, value, headers=headers)

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
        headers.append(("x-rejected-samples", ",".join(map(str, rejected)).encode()))
    return headers
