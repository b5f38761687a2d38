"""Reading Kafka outside the agent driver: the alert evaluator, the notifier, the store.

These read with a plain confluent-kafka ``Consumer``: the evaluator and the notifier
``assign`` every partition of their topics and never commit (their state holds the
positions); the store joins its ``<prefix>store`` group and commits what it stored.
What they share:

* ``config``, ``new_consumer``: the one way they make a consumer (``kafka.security``,
  no auto-commit; a refused login or certificate raises ``KafkaAccessDenied`` from
  ``consume``).
* ``partitions``, ``offsets_at``, ``end_offsets``: metadata look-ups, retried while
  the broker is briefly unavailable (``admin.with_retries``).
* ``fetch``: one batch of records; error events are dropped (a partition's end
  silently, any other logged).
* ``Positions``: the offset after the last record handled, per partition; ``commit``
  commits exactly those (never the consumer's position: a record fetched but not yet
  handled is never committed).
* ``dead_letter``: a consumed record to the dead-letter topic, with the reason.
* For a duty under a lease (``runtime.lease``): ``check_lease`` ends the term when
  the lease is lost, ``Cadence`` checkpoints every interval while there is something
  new (and meanwhile commits the fenced producer's transaction, so that what was sent
  becomes visible), ``end_term`` closes the consumer and aborts what the term left open.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from monitoring.config import KafkaSettings
from monitoring.log import get_logger
from monitoring.runtime.admin import with_retries
from monitoring.runtime.kafka_client import (
    KafkaAccessDenied,
    KafkaTarget,
    raise_on_access_error,
    read_refusal,
)
from monitoring.runtime.lease import Fenced, FencedOutputs, Lease
from monitoring.runtime.outputs import DeadLetters, Outputs, consumer_config

log = get_logger("consume")
TP = tuple[str, int]  # (topic, partition)
METADATA_TIMEOUT_S = 30.0


def config(kafka: KafkaSettings, group: str, **extra: Any) -> dict[str, Any]:
    """The librdkafka settings of such a consumer of ``group`` (``consumer_config``,
    ``error_cb`` raising ``KafkaAccessDenied``), then ``extra``."""
    return consumer_config(kafka, group, **{"error_cb": raise_on_access_error(kafka), **extra})


def new_consumer(kafka: KafkaSettings, group: str, **extra: Any) -> Consumer:
    """A consumer with ``config(kafka, group, **extra)``."""
    return Consumer(config(kafka, group, **extra))


def partitions(c: Any, topic: str) -> list[int]:
    """``topic``'s partitions, in order."""
    return sorted(c.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics[topic].partitions)


def offsets_at(c: Any, topic: str, parts: Sequence[int], since_ms: int) -> list[TopicPartition]:
    """Each partition of ``topic`` at its first record at or after ``since_ms`` (its
    end, ``OFFSET_END``, when there is none)."""
    found = with_retries(
        lambda: c.offsets_for_times(
            [TopicPartition(topic, p, since_ms) for p in parts], timeout=10
        ),
        what=f"offsets_for_times {topic}",
    )
    return [
        TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END)
        for tp in found
    ]


def end_offsets(
    c: Any, topic: str, parts: Iterable[int], timeout_s: float = 10.0
) -> dict[int, int]:
    """Each partition's end offset (high watermark) now."""

    def high(p: int) -> int:
        tp = TopicPartition(topic, p)
        return int(c.get_watermark_offsets(tp, timeout=timeout_s, cached=False)[1])

    return {p: with_retries(partial(high, p), what=f"end offsets {topic}") for p in parts}


def fetch(
    c: Any, max_messages: int, timeout_s: float, kafka: KafkaTarget | None = None
) -> list[Any]:
    """Up to ``max_messages`` records that arrive within ``timeout_s``; error events
    are not records: a partition's end is skipped, any other logged and skipped, but
    a refusal of the broker's authorizer (a missing ACL: it never passes) raises
    ``KafkaAccessDenied`` naming it (the user from ``kafka``)."""
    out = []
    for m in c.consume(num_messages=max_messages, timeout=timeout_s):
        err = m.error()
        if err is None:
            out.append(m)
        elif err.code() != KafkaError._PARTITION_EOF:
            problem = read_refusal(kafka or "?", err, m.topic() or "")
            if problem is not None:
                raise KafkaAccessDenied(problem)
            log.warning("consume_error", error=str(err))
    return out


def _call(msg: Any, attr: str) -> Any:
    """``msg.attr()`` if the message has it (test fakes may not), else None."""
    f = getattr(msg, attr, None)
    return f() if callable(f) else None


def where(msg: Any) -> tuple[str, int | None, int | None]:
    """A record's topic, partition and offset (None where a test fake has none)."""
    return msg.topic() or "", _call(msg, "partition"), _call(msg, "offset")


class Positions:
    """The offset after the last record handled, per (topic, partition)."""

    def __init__(self) -> None:
        self.next: dict[TP, int] = {}
        self.unplaced = False  # a record without partition or offset was handled

    def advance(self, msg: Any) -> None:
        """``msg`` was handled (a message without partition or offset is not counted)."""
        topic, partition, offset = where(msg)
        if partition is not None and offset is not None:
            self.next[(topic, partition)] = offset + 1
        else:
            self.unplaced = True

    def drop(self, tps: Iterable[TP]) -> None:
        """Forget partitions given up (a rebalance)."""
        for tp in tps:
            self.next.pop(tp, None)

    def commit(self, c: Any) -> None:
        """Commit the positions synchronously, then forget them. With none, nothing is
        committed (the records handled were on partitions given up since: the
        consumer's own position would commit records fetched but not handled), unless
        records without offsets were handled (test fakes): then the consumer's own
        position; nothing to commit at all is no error."""
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.next.items()]
        try:
            if offsets:
                c.commit(offsets=offsets, asynchronous=False)
            elif self.unplaced:
                c.commit(asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != KafkaError._NO_OFFSET:
                raise
        self.next.clear()
        self.unplaced = False


def dead_letter(dead_letters: DeadLetters, msg: Any, reason: str, detail: str) -> bool:
    """Send consumed ``msg`` to the dead-letter topic with ``reason``; never raises.
    False (logged, counted in ``dead_letters.failed``) if the producer refused it."""
    topic, partition, offset = where(msg)
    source = (topic, partition or 0, offset or 0)
    return dead_letters.send(_call(msg, "key"), msg.value(), reason, detail, source)


def check_lease(lease: Lease | None, duty: str, vetoed: str = "") -> None:
    """Raise ``Fenced`` when the term must end: ``lease`` lost, or a write vetoed
    (``vetoed`` says why). Without a lease (``ha.enabled: false``), never."""
    if lease is not None and (vetoed or not lease.poll()):
        raise Fenced(vetoed or f"{duty}: the lease was lost")


class Cadence:
    """When a duty checkpoints: every ``interval_s`` while there is something new."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self.clock = clock
        self.last = clock()

    async def step(
        self, dirty: bool, outputs: Outputs, checkpoint: Callable[[], Awaitable[None]]
    ) -> bool:
        """``checkpoint()`` if ``dirty`` and due (True); otherwise commit the fenced
        producer's open transaction, so that what was sent is visible to readers of
        committed records (the notifier, a standby)."""
        if dirty and self.clock() - self.last >= self.interval_s:
            self.last = self.clock()
            await checkpoint()
            return True
        if isinstance(outputs, FencedOutputs) and outputs.open:
            await outputs.flush()
        return False


def end_term(c: Any, outputs: Outputs) -> None:
    """Close the consumer; abort the fenced producer's open transaction (nothing a
    term did not commit is seen)."""
    c.close()
    if isinstance(outputs, FencedOutputs):
        outputs.abort()
