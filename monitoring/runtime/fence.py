"""Worker agents' changelogs fenced per source partition: Kafka's transactional fencing.

A worker that stalls past its consumer-group session (SIGSTOP, a long GC, a VM
migration) is expelled, and its partitions go to another worker, which restores their
state from the state topic. When the stalled worker resumes it still holds that state
and, before it learns of the revocation, checkpoints it (its timer, and the forced
checkpoint aiokafka's rejoin asks for with the *old* assignment): without a fence those
stale records land after the new owner's and win compaction.

``PartitionFence`` is Kafka's original exactly-once design (Kafka Streams' EOS-v1,
Faust's ``exactly_once``): one transactional producer per assigned source partition,
with the fixed ``transactional.id`` ``<state topic>.p<partition>`` (the state topic
carries the deployment's prefix and the agent).

* ``acquire(p)``, called before partition ``p``'s state is read, creates the producer
  and calls ``init_transactions``: the broker bumps the producer epoch, aborts any
  transaction the former owner left open and fences its producer.
* ``write(p, records)`` is one checkpoint of ``p``: its state records in one
  transaction, each with the header ``x-owner: <owner>/<term>`` (``term``: the
  number of this fence's ``acquire``). A fenced producer's transaction fails:
  ``PartitionLost`` tells the runtime to drop ``p``'s state unwritten (as Kafka
  Streams' ``onPartitionsLost``) and go on with its other partitions.
* ``release(p)`` closes the producer (a revoked partition), aborting an open transaction.

State readers read committed records only (``runtime.changelog``), so a record the
former owner wrote after the new owner's ``acquire`` is never restored. Records it
committed *before* that ``acquire`` are a whole checkpoint of the state it had, read
by the new owner as any checkpoint (the agent skips replayed messages it covers).
Aggregate outputs stay on the agent's shared, non-transactional ``Outputs``: see
docs/ha.md (worker agents) for why that is safe.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from monitoring.config import KafkaSettings
from monitoring.log import get_logger
from monitoring.runtime.outputs import OutputsLost, producer_config

log = get_logger("fence")
OWNER_HEADER = "x-owner"
# codes of a producer that another one with its transactional id fenced
ACQUIRE_TIMEOUT_S = 120.0  # init_transactions retried this long, then the process stops
FENCED_CODES = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


class PartitionLost(RuntimeError):
    """Another worker took the partition over and fenced this one's producer."""

    def __init__(self, partition: int, reason: str) -> None:
        super().__init__(f"partition {partition}: {reason}")
        self.partition = partition


def transactional_id(state_topic: str, partition: int) -> str:
    """The fixed transactional id of one state partition's writer.

    >>> transactional_id("e1.metrics.aggregation.state", 3)
    'e1.metrics.aggregation.state.p3'
    """
    return f"{state_topic}.p{partition}"


@dataclass
class _Writer:
    producer: Any = None  # confluent_kafka.Producer, set once configured
    owner: bytes = b""  # x-owner of its records: <owner>/<term>
    failed: int = 0  # records librdkafka gave up on in the current transaction
    open: bool = False  # a transaction begun and not known committed or aborted
    committing: bool = False  # its commit timed out: librdkafka resumes it when called again


class PartitionFence:
    """The transactional writers of one agent's state partitions (module docstring)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        state_topic: str,
        owner: str,
        timeout_s: float = 10.0,
        **config: Any,
    ) -> None:
        self.kafka = kafka
        self.state_topic = state_topic
        self.owner = owner.encode()
        self.timeout_s = timeout_s
        self._config = config  # further librdkafka settings (tests)
        self._writers: dict[int, _Writer] = {}
        self.commits = 0
        self._terms = itertools.count(1)  # each acquire begins a term (threads share it)

    @property
    def partitions(self) -> list[int]:
        """The partitions this fence holds a producer for."""
        return sorted(self._writers)

    def acquire(self, p: int) -> None:
        """Fence every former writer of partition ``p``; blocking (call it in a thread,
        before reading ``p``'s state). A producer of ``p`` held already is replaced."""
        self.release(p)
        writer = _Writer(owner=b"%s/%d" % (self.owner, next(self._terms)))
        writer.producer = Producer(
            {
                **producer_config(self.kafka, lambda err, _m: self._on_delivery(writer, err)),
                "transactional.id": transactional_id(self.state_topic, p),
                "transaction.timeout.ms": 60_000,
                "delivery.report.only.error": True,
                **self._config,
            }
        )
        started = time.monotonic()
        while True:  # a broker restarting or a coordinator moving: retried for a while
            try:
                writer.producer.init_transactions(self.timeout_s)
                break
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if not err.retriable() or time.monotonic() - started > ACQUIRE_TIMEOUT_S:
                    raise OutputsLost(f"{self.state_topic}[{p}]: init_transactions: {err}") from e
                log.warning("acquire_retry", topic=self.state_topic, partition=p,
                            error=str(err)[:300])  # fmt: skip
        self._writers[p] = writer
        log.info(
            "partition_fenced_for_us",
            topic=self.state_topic,
            partition=p,
            owner=writer.owner.decode(errors="replace"),
            seconds=round(time.monotonic() - started, 3),
        )

    def release(self, p: int) -> None:
        """Close partition ``p``'s producer (revoked), aborting an open transaction."""
        writer = self._writers.pop(p, None)
        if writer is not None and writer.open:
            with suppress(KafkaException):
                writer.producer.abort_transaction(1.0)

    def release_all(self) -> None:
        """Close every producer (shutdown)."""
        for p in list(self._writers):
            self.release(p)

    async def write(self, p: int, records: Sequence[tuple[bytes, bytes | None]]) -> bool:
        """Write ``records`` to ``p`` of the state topic in one transaction: True once
        committed, False if the broker was slow (try again later). Raises
        ``PartitionLost`` if another writer fenced this one, ``OutputsLost`` on a fatal
        error, ``KafkaException`` if a record was refused (aborted: try again later)."""
        writer = self._writers.get(p)
        if writer is None:
            raise PartitionLost(p, "no producer (not acquired)")
        ok = await asyncio.to_thread(self._write, p, writer, records)
        if ok:
            self.commits += 1
        return ok

    def _write(
        self, p: int, writer: _Writer, records: Sequence[tuple[bytes, bytes | None]]
    ) -> bool:
        producer = writer.producer
        headers = [(OWNER_HEADER, writer.owner)]
        try:
            if writer.committing:  # an earlier commit timed out: resume it (librdkafka)
                producer.commit_transaction(self.timeout_s)
                writer.committing = writer.open = False
            elif writer.open and not self._abort(p, writer):  # an earlier attempt failed
                return False
            producer.begin_transaction()
            writer.open = True
            writer.failed = 0
            for key, value in records:
                while True:
                    try:
                        producer.produce(self.state_topic, value, key, p, headers=headers)
                        break
                    except BufferError:  # the queue is full: let it drain
                        producer.poll(0.05)
            writer.committing = True
            producer.commit_transaction(self.timeout_s)
            writer.committing = writer.open = False
            if writer.failed:  # cannot happen after a successful commit; be sure
                raise OutputsLost(f"{self.state_topic}[{p}]: {writer.failed} records failed")
            return True
        except KafkaException as e:
            err: KafkaError = e.args[0]
            self._classify(p, err)
            # the checkpoint is written again at the next tick: a commit that timed out is
            # resumed first (it may land: the retry rewrites the same values), anything
            # else is aborted; a record refused (not the broker slow) fails the checkpoint
            log.warning("state_commit_retry", topic=self.state_topic, partition=p,
                        error=str(err)[:300])  # fmt: skip
            if err.txn_requires_abort() or not (writer.committing and err.retriable()):
                writer.committing = False
                self._abort(p, writer)
            if not err.retriable() and not err.txn_requires_abort():
                raise
            return False

    def _abort(self, p: int, writer: _Writer) -> bool:
        try:
            writer.producer.abort_transaction(self.timeout_s)
        except KafkaException as e:
            err: KafkaError = e.args[0]
            self._classify(p, err)
            return False
        writer.open = False
        return True

    def _classify(self, p: int, err: KafkaError) -> None:
        """Raise for an error that retrying cannot fix; return for the others."""
        if err.code() in FENCED_CODES:
            self._writers.pop(p, None)
            raise PartitionLost(p, f"fenced: {err.str()}")
        if err.fatal():
            self._writers.pop(p, None)
            raise OutputsLost(f"{self.state_topic}[{p}]: {err.str()}")

    @staticmethod
    def _on_delivery(writer: _Writer, err: KafkaError | None) -> None:
        if err is not None:
            writer.failed += 1
