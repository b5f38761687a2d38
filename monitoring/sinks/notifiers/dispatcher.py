"""Delivery: retries with exponential backoff, per-receiver rate limits, idempotence, log.

``Dispatcher.deliver(notification)`` sends a notification to every integration of
its receiver, concurrently. Per integration:

* **Idempotence.** The delivery key is blake2b-128 of (receiver, integration id,
  group key, tier, optional ``key_extra``, the sorted ``fingerprint:status`` of the
  alerts). A key already delivered is not sent again (outcome ``duplicate``); the same
  key in flight waits for the first send. :class:`DeliveredKeys` serialises with
  ``to_bytes``/``from_bytes`` for a checkpoint (bounded: oldest keys evicted first).
  Keying per integration means that when Slack succeeded and email failed, a replay
  after a restart resends only the email.
* **Retries.** Timeouts, connection errors, 5xx, 429 and SMTP 4xx are retried after
  ``initial_backoff_s * multiplier**(attempt-1)`` (capped at ``max_backoff_s``,
  +-``jitter``, at least the server's Retry-After), until ``max_attempts`` (0: no
  limit) or ``give_up_after_s`` since the first attempt. Other 4xx are permanent
  failures, logged at once.
* **Rate limit.** A token bucket per receiver (``Receiver.rate_limit``, or the
  dispatcher's ``default_rate_limit``); every attempt takes a token, a limited
  attempt waits its turn (first come, first served), nothing is dropped.
* **Concurrency.** At most ``max_in_flight`` sends at once (the HTTP pool's size, so
  no send waits for a connection inside its own timeout) and ``per_receiver`` per
  receiver, so a slow receiver cannot hold every slot. Backoff sleeps hold no slot.
* **Delivery log.** One :class:`DeliveryRecord` per attempt outcome (``delivered``,
  ``retrying``, ``failed``, ``duplicate``) goes to ``on_record`` and to the structlog
  log. Error texts are scrubbed of every secret of the integration (URLs, keys,
  passwords) before they are logged or recorded; ``target`` is the redacted URL.

>>> RetryPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=5, jitter=0).delay(4)
5.0
>>> keys = DeliveredKeys()
>>> keys.add(b"k" * 16)
>>> b"k" * 16 in DeliveredKeys.from_bytes(keys.to_bytes())
True
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import struct
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram

from monitoring.alerts.model import Notification
from monitoring.alerts.receivers import RateLimit, Receiver
from monitoring.log import get_logger
from monitoring.sinks.notifiers.base import (
    MAX_ERROR_CHARS,
    Context,
    DeliveryError,
    Integration,
    Redactor,
    build,
)

Outcome = Literal["delivered", "retrying", "failed", "duplicate"]
KEY_BYTES = 16
# httpx logs every request's full URL at INFO (and httpcore at DEBUG): webhook URLs
# carry tokens, so these loggers stay at WARNING whatever the root level is.
QUIET_LOGGERS = ("httpx", "httpcore")


class Vetoed(Exception):
    """``before_send`` refused an attempt (the notifier lost its lease): nothing was
    sent or recorded, and the delivery ends by raising this."""


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff and limits of retries; ``timeout_s`` bounds one HTTP request."""

    initial_backoff_s: float = 0.5
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    jitter: float = 0.1
    max_attempts: int = 0
    give_up_after_s: float = 900.0
    timeout_s: float = 10.0
    max_in_flight: int = 64
    per_receiver: int = 8

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = float(
            min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        )
        if self.jitter and rng is not None:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return base


class TokenBucket:
    """``per_second`` tokens per second, at most ``burst`` saved; waiters queue in order.

    >>> t = [0.0]; b = TokenBucket(2.0, 1, clock=lambda: t[0])
    >>> b.reserve(), b.reserve(), b.reserve()
    (0.0, 0.5, 1.0)
    """

    def __init__(
        self, per_second: float, burst: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if per_second <= 0 or burst < 1:
            raise ValueError("rate limit: per_second must be > 0 and burst >= 1")
        self.rate = per_second
        self.burst = float(burst)
        self.tokens = float(burst)
        self.clock = clock
        self.updated = clock()

    def reserve(self) -> float:
        """Take a token; return how long to wait before using it (0 if available)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    async def acquire(self, sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> float:
        """Wait for a token; return the time waited."""
        wait = self.reserve()
        if wait > 0:
            await sleep(wait)
        return wait


class DeliveredKeys:
    """Keys delivered successfully, oldest evicted beyond ``capacity``; serialisable.

    Format: byte 1 (version), uint32 count (big-endian), then 16 bytes per key in
    insertion order: 5 + 16 n bytes, 1.6 MB at the default capacity of 100,000 keys,
    under Kafka's default message size limit for a checkpoint record.
    """

    VERSION = 1

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[bytes, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[bytes]:
        """The keys, oldest first."""
        return iter(list(self._keys))

    def add(self, key: bytes) -> None:
        """Remember ``key`` (16 bytes)."""
        if len(key) != KEY_BYTES:
            raise ValueError(f"delivery key must be {KEY_BYTES} bytes, got {len(key)}")
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    def to_bytes(self) -> bytes:
        """The set as bytes (see the class docstring)."""
        return struct.pack(">BI", self.VERSION, len(self._keys)) + b"".join(self._keys)

    @classmethod
    def from_bytes(cls, data: bytes, capacity: int = 100_000) -> DeliveredKeys:
        """Inverse of ``to_bytes``; a wrong version or length is a ValueError."""
        if len(data) < 5 or data[0] != cls.VERSION:
            raise ValueError("delivered keys: unknown format or version")
        (count,) = struct.unpack_from(">I", data, 1)
        if len(data) != 5 + count * KEY_BYTES:
            raise ValueError(f"delivered keys: {len(data)} bytes do not hold {count} keys")
        out = cls(capacity)
        for i in range(count):
            out.add(data[5 + i * KEY_BYTES : 5 + (i + 1) * KEY_BYTES])
        return out


def delivery_key(receiver: str, integration: str, n: Notification, key_extra: str = "") -> bytes:
    """16-byte idempotence key of one notification to one integration."""
    parts = [receiver, integration, n.group_key, str(n.tier), key_extra]
    parts += sorted(f"{a.fingerprint}:{a.status}" for a in n.alerts)
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=KEY_BYTES).digest()


@dataclass(frozen=True)
class DeliveryRecord:
    """One attempt's outcome: the delivery log row (``schemas/delivery.v1.avsc``)."""

    delivery_id: str
    attempt: int
    time_ms: int
    receiver: str
    integration: str
    channel: str
    target: str
    group_key: str
    tier: int
    status: str
    fingerprints: tuple[str, ...]
    outcome: Outcome
    http_status: int | None
    error: str
    duration_ms: float

    def to_avro(self) -> dict[str, Any]:
        """The record as the ``monitoring.Delivery`` Avro schema names its fields."""
        out = dict(self.__dict__)  # shallow: dataclasses.asdict deep-copies (10x slower)
        out["fingerprints"] = list(self.fingerprints)
        return out


class NotifierMetrics:
    """The notifier's self-metrics, registered in an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "monitoring_notifier_attempts",
            "Delivery attempts by outcome",
            ["receiver", "channel", "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "monitoring_notifier_send_seconds",
            "Duration of one send",
            ["channel"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.rate_limited_seconds = Counter(
            "monitoring_notifier_rate_limited_seconds",
            "Time spent waiting for a receiver's rate limit",
            ["receiver"],
            registry=registry,
        )


class Dispatcher:
    """Delivers notifications to receivers; use as ``async with Dispatcher(...) as d``."""

    def __init__(
        self,
        receivers: Mapping[str, Receiver],
        *,
        policy: RetryPolicy | None = None,
        external_url: str = "",
        delivered: DeliveredKeys | None = None,
        on_record: Callable[[DeliveryRecord], None] | None = None,
        default_rate_limit: RateLimit | None = None,
        registry: CollectorRegistry | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        before_send: Callable[[], Awaitable[None]] | None = None,
        metrics: NotifierMetrics | None = None,
    ) -> None:
        self.receivers = dict(receivers)
        self.before_send = before_send  # awaited right before every send; may veto it
        self.policy = policy or RetryPolicy()
        self.delivered = delivered if delivered is not None else DeliveredKeys()
        self.on_record = on_record
        # ``metrics``: registered once by an owner that makes a dispatcher per lease term
        self.metrics = metrics or NotifierMetrics(registry or CollectorRegistry())
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(
            timeout=self.policy.timeout_s,
            limits=httpx.Limits(max_connections=self.policy.max_in_flight),
        )
        self.slots = asyncio.Semaphore(self.policy.max_in_flight)
        self.receiver_slots = {
            name: asyncio.Semaphore(self.policy.per_receiver) for name in self.receivers
        }
        self.ctx = Context(self.http, external_url, self.policy.timeout_s)
        self.sleep = sleep
        self.clock = clock
        self.rng = rng or random.Random()
        self.log = get_logger("notifier")
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        self.integrations = {name: build(r, self.ctx) for name, r in self.receivers.items()}
        self.targets = {i: i.target for its in self.integrations.values() for i in its}
        self.buckets: dict[str, TokenBucket] = {}
        for name, r in self.receivers.items():
            limit = r.rate_limit or default_rate_limit
            if limit is not None:
                self.buckets[name] = TokenBucket(limit.per_second, limit.burst, clock)
        self._inflight: dict[bytes, asyncio.Future[None]] = {}

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if the dispatcher created it."""
        if self._own_http:
            await self.http.aclose()

    async def deliver(self, n: Notification, key_extra: str = "") -> list[DeliveryRecord]:
        """Deliver ``n`` to every integration of its receiver; return each final record.

        An unknown receiver is logged and recorded as failed, not raised.
        """
        integrations = self.integrations.get(n.receiver)
        if integrations is None:
            rec = self._record(b"", 0, None, n, "failed", None, "unknown receiver", 0.0)
            return [rec]
        wanted = [i for i in integrations if i.wants(n)]
        if len(wanted) == 1:  # the common case: no task per integration
            results = [await self._deliver_one(wanted[0], n, key_extra)]
        else:
            results = await asyncio.gather(*(self._deliver_one(i, n, key_extra) for i in wanted))
        return [r for r in results if r is not None]

    async def _deliver_one(
        self, integ: Integration, n: Notification, key_extra: str
    ) -> DeliveryRecord | None:
        key = delivery_key(n.receiver, integ.id, n, key_extra)
        while key in self._inflight:  # the same delivery is being sent: wait for it
            await asyncio.shield(self._inflight[key])
        if key in self.delivered:
            return self._record(key, 0, integ, n, "duplicate", None, "", 0.0)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            return await self._attempts(integ, n, key)
        finally:
            del self._inflight[key]
            done.set_result(None)

    async def _attempts(self, integ: Integration, n: Notification, key: bytes) -> DeliveryRecord:
        redact = Redactor(integ.secrets())
        bucket = self.buckets.get(n.receiver)
        first = self.clock()
        attempt = 0
        while True:
            attempt += 1
            if bucket is not None:
                waited = await bucket.acquire(self.sleep)
                self.metrics.rate_limited_seconds.labels(n.receiver).inc(waited)
            try:
                async with self.receiver_slots[n.receiver], self.slots:
                    if self.before_send is not None:
                        await self.before_send()
                    t0 = self.clock()
                    status = await integ.send(n)
            except Vetoed:
                raise
            except DeliveryError as e:
                err: DeliveryError = e
            except Exception as e:  # a bug or an unexpected library error: permanent
                err = DeliveryError(f"{type(e).__name__}: {e}", retryable=False)
            else:
                self.delivered.add(key)
                took = self.clock() - t0
                self.metrics.seconds.labels(integ.kind).observe(took)
                return self._record(key, attempt, integ, n, "delivered", status, "", took)
            took = self.clock() - t0
            self.metrics.seconds.labels(integ.kind).observe(took)
            text = redact(str(err))[:MAX_ERROR_CHARS]
            delay = max(self.policy.delay(attempt, self.rng), err.retry_after_s or 0.0)
            out_of_attempts = self.policy.max_attempts and attempt >= self.policy.max_attempts
            out_of_time = self.clock() + delay - first > self.policy.give_up_after_s
            if not err.retryable or out_of_attempts or out_of_time:
                if err.retryable:
                    text = f"gave up after {attempt} attempts: {text}"
                return self._record(key, attempt, integ, n, "failed", err.status, text, took)
            self._record(key, attempt, integ, n, "retrying", err.status, text, took, delay)
            await self.sleep(delay)

    def _record(
        self,
        key: bytes,
        attempt: int,
        integ: Integration | None,
        n: Notification,
        outcome: Outcome,
        http_status: int | None,
        error: str,
        took_s: float,
        retry_in_s: float | None = None,
    ) -> DeliveryRecord:
        rec = DeliveryRecord(
            delivery_id=key.hex(),
            attempt=attempt,
            time_ms=int(time.time() * 1000),
            receiver=n.receiver,
            integration=integ.id if integ else "",
            channel=integ.kind if integ else "",
            target=self.targets[integ] if integ else "",
            group_key=n.group_key,
            tier=n.tier,
            status=n.status,
            fingerprints=tuple(a.fingerprint for a in n.alerts),
            outcome=outcome,
            http_status=http_status,
            error=error,
            duration_ms=round(took_s * 1000, 3),
        )
        self.metrics.attempts.labels(n.receiver, rec.channel, outcome).inc()
        fields = dict(rec.__dict__)
        level = {"failed": "error", "retrying": "warning"}.get(outcome, "info")
        if retry_in_s is not None:
            fields["retry_in_s"] = round(retry_in_s, 3)
        getattr(self.log, level)("delivery", **fields)
        if self.on_record is not None:
            self.on_record(rec)
        return rec
