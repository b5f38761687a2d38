"""One active instance per duty: a Kafka group lease, and outputs fenced by it.

**The lease.** Every instance of a duty (``alerting``, ``notifier``) joins the consumer
group ``<prefix><duty>.lease`` on the one-partition ``leases`` topic; the member
assigned partition 0 holds the lease. Kafka's group coordinator is the arbiter: a
member that stops heartbeating for ``ha.session_timeout`` is expelled and the
partition goes to another member (the cooperative-sticky assignor keeps it where it is
while its holder lives, so a standby joining never moves it). ``Lease.poll`` serves
the rebalance callbacks; ``confirm`` proves membership with a synchronous offset
commit, which the coordinator refuses from an expelled member (stale generation).

**Fencing.** ``FencedOutputs`` is an agent's producer as a Kafka transaction with the
fixed ``transactional.id`` ``<prefix><duty>``, as Kafka Streams' exactly-once mode:

* a new holder's ``init_transactions`` bumps the producer epoch, aborting the former
  holder's open transaction; anything the former holder produces or commits after
  that is refused by the broker (``PRODUCER_FENCED``);
* every commit also sends the lease partition's offset with the lease consumer's group
  metadata (KIP-447), so the broker refuses it from a member whose generation is stale
  even before a new holder initialised.

Readers of the state and of the outputs read committed records only (librdkafka's
default ``isolation.level``), so nothing a fenced holder wrote is ever seen. A commit
that fails for good raises ``Fenced``: the agent's term ends and it starts again from
the committed state (as a standby unless it still holds the lease).

``Lease.fresh`` bounds side effects outside Kafka (a notifier's HTTP sends): after a
confirmation that started at ``t``, no other instance can hold the lease before
``t + session_timeout - heartbeat_interval`` (this member heartbeated at most one
interval before ``t``, and is expelled a session after its last heartbeat); a send
checks the lease is fresh, with one more heartbeat interval of margin, or confirms first.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from contextlib import suppress
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from monitoring.config import KafkaSettings, ms
from monitoring.log import get_logger
from monitoring.runtime import topics
from monitoring.runtime.outputs import Headers, Outputs, consumer_config

log = get_logger("lease")


class Fenced(RuntimeError):
    """This instance may no longer write: its producer was fenced, its group membership
    is stale or its transaction was aborted. Start a new term from the committed state."""


class Lease:
    """Membership of ``<prefix><duty>.lease``; ``held`` while assigned the partition."""

    def __init__(
        self,
        kafka: KafkaSettings,
        duty: str,
        session_timeout_ms: int = 6000,
        heartbeat_interval_ms: int = 1000,
        instance: str | None = None,
    ) -> None:
        self.duty = duty
        self.topic = topics.topic_name(kafka, topics.LEASES)
        self.group = f"{kafka.topic_prefix}{duty}.lease"
        self.instance = instance or uuid.uuid4().hex[:12]
        self.session_s = session_timeout_ms / 1000
        self.heartbeat_s = heartbeat_interval_ms / 1000
        self.held = False
        self.terms = 0  # terms this instance began as the holder (``acquire``)
        self.acquired_at = 0.0
        self._confirmed_at = float("-inf")
        self.consumer = Consumer(
            consumer_config(
                kafka,
                self.group,
                **{
                    "client.id": f"{duty}-{self.instance}",
                    "session.timeout.ms": session_timeout_ms,
                    "heartbeat.interval.ms": heartbeat_interval_ms,
                    "partition.assignment.strategy": "cooperative-sticky",
                },
            )
        )
        self.consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    @classmethod
    def from_settings(cls, settings: Any, duty: str) -> Lease:
        """A lease with ``settings.ha``'s timeouts."""
        ha = settings.ha
        return cls(settings.kafka, duty, ms(ha.session_timeout), ms(ha.heartbeat_interval))

    def _mine(self, parts: list[TopicPartition]) -> bool:
        return any(tp.topic == self.topic and tp.partition == 0 for tp in parts)

    def _assigned(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        if self._mine(parts) and not self.held:
            self.held = True
            self.acquired_at = time.monotonic()
            log.info("lease_acquired", duty=self.duty, instance=self.instance)

    def _revoked(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        if self._mine(parts) and self.held:
            self.held = False
            self._confirmed_at = float("-inf")
            log.warning("lease_revoked", duty=self.duty, instance=self.instance)

    def _lost(self, _consumer: Any, parts: list[TopicPartition]) -> None:
        if self._mine(parts) and self.held:
            self.held = False
            self._confirmed_at = float("-inf")
            log.warning("lease_lost", duty=self.duty, instance=self.instance)

    def poll(self) -> bool:
        """Serve the group's callbacks (call it often); whether the lease is held."""
        self.consumer.poll(0)  # the lease topic holds no records
        return self.held

    def offsets(self) -> list[TopicPartition]:
        """The lease partition's offset, committed with each transaction."""
        return [TopicPartition(self.topic, 0, 0)]

    def group_metadata(self) -> Any:
        """The member's group metadata (member id, generation) for a transaction."""
        return self.consumer.consumer_group_metadata()

    def confirm(self) -> bool:
        """Prove membership now (a synchronous offset commit); False if expelled."""
        started = time.monotonic()
        if not self.held:  # as of the last poll (the loop's thread polls, not this)
            return False
        try:
            self.consumer.commit(offsets=self.offsets(), asynchronous=False)
        except KafkaException as e:
            log.warning("lease_not_confirmed", duty=self.duty, error=str(e.args[0])[:300])
            return False
        self.confirmed(started)
        return self.held

    def confirmed(self, started: float) -> None:
        """A commit that started at ``started`` (monotonic) proved membership."""
        self._confirmed_at = max(self._confirmed_at, started)

    def fresh(self) -> bool:
        """Whether no other instance can hold the lease yet (module docstring)."""
        margin = self.session_s - 2 * self.heartbeat_s
        return self.held and time.monotonic() < self._confirmed_at + margin

    async def ensure_fresh(self) -> None:
        """Confirm unless fresh; ``Fenced`` if the lease is gone."""
        if self.fresh():
            return
        if not await asyncio.to_thread(self.confirm):
            raise Fenced(f"{self.duty}: the lease is no longer held")

    async def acquire(self, stop: Any, tick: Any = None, interval_s: float = 0.05) -> bool:
        """Wait until the lease is held and confirmed (or ``stop`` is set: False);
        ``tick()`` runs between polls (a standby's reading of its changelog)."""
        while not stop.is_set():
            if self.poll() and await asyncio.to_thread(self.confirm):
                self.terms += 1
                return True
            if tick is not None:
                await asyncio.to_thread(tick)
            else:
                await asyncio.sleep(interval_s)
        return False

    def close(self) -> None:
        """Leave the group (a standby takes over at once)."""
        with suppress(Exception):
            self.consumer.close()


_FENCING = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.FENCED_INSTANCE_ID,
    KafkaError.REBALANCE_IN_PROGRESS,
}


class FencedOutputs(Outputs):
    """``Outputs`` in Kafka transactions fenced by the lease (module docstring).

    ``init`` (after the lease is acquired, before the state is read) fences every former
    holder; a transaction opens at the first record and ``flush`` commits it with the
    lease partition's offset. ``x-holder`` (instance/term) goes on every state record.
    """

    def __init__(self, kafka: KafkaSettings, lease: Lease, flush_timeout_s: float = 10.0) -> None:
        txn_id = f"{kafka.topic_prefix}{lease.duty}"
        super().__init__(
            kafka,
            flush_timeout_s,
            **{"transactional.id": txn_id, "transaction.timeout.ms": 30_000},
        )
        self.lease = lease
        self.holder = f"{lease.instance}/{lease.terms}".encode()
        self._open = False
        self.commits = 0
        # records produced while a commit runs (in a thread): the next transaction's
        self._committing = False
        self._pending: list[tuple[Any, ...]] = []

    def init(self) -> None:
        """Fence former holders (aborting their open transaction); blocking."""
        try:
            self.producer.init_transactions(self.flush_timeout_s * 3)
        except KafkaException as e:
            raise Fenced(f"init_transactions: {e.args[0]}") from e

    def _produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        headers: Headers | None,
        on_delivery: Any = None,
    ) -> None:
        if self._committing:  # librdkafka refuses records during a commit
            self._pending.append((topic, key, value, partition, headers, on_delivery))
            return
        try:
            if not self._open:
                self.producer.begin_transaction()
                self._open = True
            super()._produce(topic, key, value, partition, headers, on_delivery)
        except KafkaException as e:
            raise Fenced(f"produce: {e.args[0]}") from e

    @property
    def open(self) -> bool:
        """Whether records wait in an uncommitted transaction (or for one)."""
        return self._open or bool(self._pending)

    async def flush(self) -> bool:
        """Commit the open transaction; False if the broker was slow (retry later).
        Records produced meanwhile go into the next transaction."""
        if not self._open and self._pending:
            self._produce_pending()
        if not self._open:
            return True
        self._committing = True
        try:
            ok = await asyncio.to_thread(self._commit)
        finally:
            self._committing = False
        if ok:
            self._produce_pending()
        return ok

    def _produce_pending(self) -> None:
        pending, self._pending = self._pending, []
        for record in pending:
            self._produce(*record)

    def _commit(self) -> bool:
        started = time.monotonic()
        t = self.flush_timeout_s
        try:
            self.producer.send_offsets_to_transaction(
                self.lease.offsets(), self.lease.group_metadata(), t
            )
            self.producer.commit_transaction(t)
        except KafkaException as e:
            err: KafkaError = e.args[0]
            if err.retriable() and not (err.fatal() or err.txn_requires_abort()):
                log.warning("commit_pending", duty=self.lease.duty, error=str(err)[:300])
                return False
            self.abort()
            log.error("fenced", duty=self.lease.duty, error=str(err)[:300],
                      fencing=err.code() in _FENCING)  # fmt: skip
            raise Fenced(f"commit: {err}") from e
        self._open = False
        self.commits += 1
        self.lease.confirmed(started)
        return True

    def abort(self) -> None:
        """Abort the open transaction (best effort: a fenced producer cannot)."""
        if self._open:
            with suppress(KafkaException):
                self.producer.abort_transaction(self.flush_timeout_s)
            self._open = False
