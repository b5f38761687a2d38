"""A standby's warm reading: topic partitions followed as they grow, committed only.

``Tail`` reads assigned partitions from given offsets without blocking (``poll``) and
reads up to the end offsets of the moment (``catch_up``), handing each record to a
callback. ``TableTail`` keeps a compacted state partition as a table (latest value per
key, ``None`` deletes), so that a standby that takes over has the state already read and
only catches up the last records: Kafka Streams' standby replicas, for one partition.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from monitoring.config import KafkaSettings, Settings
from monitoring.log import get_logger
from monitoring.runtime import consume
from monitoring.runtime.kafka_client import KafkaAccessDenied, read_refusal
from monitoring.runtime.lease import Fenced, FencedOutputs, Lease
from monitoring.runtime.outputs import consumer_config
from monitoring.runtime.topics import STANDBY_READER, group_name

log = get_logger("standby")


class Tail:
    """Follows ``start`` (topic partitions with their first offset), ``apply`` per record."""

    def __init__(
        self,
        kafka: KafkaSettings,
        start: list[TopicPartition],
        apply: Callable[[Any], None],
    ) -> None:
        self.apply = apply
        self.kafka = kafka
        self.consumer = Consumer(
            consumer_config(
                kafka,
                group_name(kafka, STANDBY_READER),  # never commits
                **{
                    "enable.partition.eof": True,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 50,
                },
            )
        )
        self.parts = [TopicPartition(tp.topic, tp.partition) for tp in start]
        self.position = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in start}
        self.records = 0
        self.consumer.assign(start)

    def poll(self, timeout_s: float = 0.1, max_messages: int = 10_000) -> int:
        """Apply what arrived within ``timeout_s``; the number of records applied."""
        n = 0
        for m in self.consumer.consume(max_messages, timeout=timeout_s):
            key = (m.topic() or "", m.partition() or 0)
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self.position[key] = max(self.position[key], m.offset() or 0)
                    continue
                denied = read_refusal(self.kafka, err, key[0])
                if denied is not None:  # a missing ACL: retrying will not help
                    raise KafkaAccessDenied(denied)
                raise KafkaException(err)
            self.apply(m)
            self.position[key] = (m.offset() or 0) + 1
            n += 1
        self.records += n
        return n

    def ends(self, timeout_s: float = 10.0) -> dict[tuple[str, int], int]:
        """Every partition's end offset now."""
        ends = {}
        for tp in self.parts:
            (end,) = consume.end_offsets(
                self.consumer, tp.topic, [tp.partition], timeout_s
            ).values()
            ends[(tp.topic, tp.partition)] = end
        return ends

    def catch_up(self, timeout_s: float = 60.0) -> None:
        """Read every partition up to its end offset of now (``TimeoutError`` if stuck:
        a transaction left open by a holder nobody fenced)."""
        ends = self.ends()
        deadline = time.monotonic() + timeout_s
        while any(self.position[k] < end for k, end in ends.items()):
            if time.monotonic() > deadline:
                behind = {f"{t}[{p}]": (self.position[(t, p)], e) for (t, p), e in ends.items()}
                raise TimeoutError(f"standby catch-up stuck (position, end): {behind}")
            self.poll(0.2)

    def close(self) -> None:
        self.consumer.close()


class TableTail(Tail):
    """One compacted partition as a table, from its beginning."""

    def __init__(self, kafka: KafkaSettings, topic: str, partition: int = 0) -> None:
        self.table: dict[bytes, bytes] = {}
        super().__init__(kafka, [TopicPartition(topic, partition, OFFSET_BEGINNING)], self._put)

    def _put(self, m: Any) -> None:
        key, value = m.key(), m.value()
        if value is None:
            self.table.pop(key, None)
        else:
            self.table[key] = value


async def take_over(
    kafka: KafkaSettings, lease: Lease, tails: list[Tail], stop: threading.Event
) -> FencedOutputs | None:
    """Stand by, following ``tails``, until ``lease`` is held (None if ``stop`` first);
    then fence every former holder (``init_transactions`` aborts its open transaction)
    and read the tails to their end: the state the new term starts from is complete."""

    def tick() -> None:
        for tail in tails:
            tail.poll(0.1 / len(tails))

    if not await lease.acquire(stop, tick=tick):
        return None
    started = time.monotonic()
    outputs = FencedOutputs(kafka, lease)
    await asyncio.to_thread(outputs.init)
    for tail in tails:
        await asyncio.to_thread(tail.catch_up)
    log.info(
        "took_over",
        duty=lease.duty,
        instance=lease.instance,
        term=lease.terms,
        fence_and_catch_up_ms=round((time.monotonic() - started) * 1000, 1),
        standby_records=sum(t.records for t in tails),
    )
    return outputs


class Duty(Protocol):
    """A process that holds one duty's lease at a time (the evaluator, the notifier)."""

    def take_over(self, lease: Lease, stop: threading.Event) -> Awaitable[bool]:
        """Stand by until ``lease`` is held and the state is read (False: ``stop``)."""
        ...

    def _run_term(self, stop: threading.Event) -> Awaitable[None]:
        """Be active until ``stop`` is set (or the lease is lost: ``Fenced``)."""
        ...

    def _new_term(self) -> None:
        """Forget the ended term's state: the next one restores from committed state."""
        ...


async def run_in_terms(settings: Settings, duty: str, process: Duty, stop: threading.Event) -> None:
    """Run ``process`` until ``stop`` is set. With ``ha.enabled``, in terms: stand by
    until this instance holds ``duty``'s lease, be active until it is lost (or the writes
    are fenced), then stand by again from the committed state."""
    if not settings.ha.enabled:
        await process._run_term(stop)
        return
    lease = Lease.from_settings(settings, duty)
    try:
        while not stop.is_set():
            try:
                if await process.take_over(lease, stop):
                    await process._run_term(stop)
            except Fenced as e:
                log.warning("term_ended", reason=str(e)[:300])
                process._new_term()
    finally:
        lease.close()


def offsets_since(kafka: KafkaSettings, topic: str, since_ms: int) -> list[TopicPartition]:
    """Every partition of ``topic`` at its first record at or after ``since_ms``."""
    c = Consumer(consumer_config(kafka, group_name(kafka, STANDBY_READER)))
    try:
        return consume.offsets_at(c, topic, consume.partitions(c, topic), since_ms)
    finally:
        c.close()
