"""A process's heartbeat and readiness probe: one thread, the same for every process.

``ProcessStatus(settings, kind, health)`` runs a daemon thread that, every
``health.heartbeat_interval``:

1. reads the process's ``health()`` dict;
2. when the process consumes in a group (``lag_group``), asks the broker for that
   group's lag on the partitions the process owns (``owned``): a partition more than
   ``health.ready_max_lag`` records behind is *catching up a backlog*;
3. publishes a heartbeat (``ops.status.Heartbeat``) to ``<prefix>status``, keyed by
   the process id, and waits for the broker to acknowledge it.

``reasons()`` (the ``ApiServer``'s ``readiness``) says what the last round found: the
broker did not acknowledge the heartbeat or answer the offsets request ("broker
unreachable"), a partition over the lag bound, or the first round not done yet. A
clean ``stop()`` writes a tombstone, so a process stopped on purpose leaves the status;
a killed one leaves its last heartbeat, which goes stale.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from monitoring.api.health import readiness_reasons
from monitoring.config import Settings, ms
from monitoring.log import get_logger
from monitoring.ops import lag as lag_probe
from monitoring.ops.status import Heartbeat, figures_from_health
from monitoring.runtime.admin import admin_client
from monitoring.runtime.outputs import producer_config
from monitoring.runtime.topics import STATUS, topic_name

log = get_logger("heartbeat")
Owned = Callable[[], Mapping[str, list[int]]]
"""The source partitions a process owns now: ``{topic: [partition, ...]}``."""


@cache
def package_version() -> str:
    """This build's version (``unknown`` outside an installed package)."""
    try:
        return version("monitoring")
    except PackageNotFoundError:
        return "unknown"


def process_id(kind: str, configured: str = "") -> str:
    """``health.process_id`` if set, else ``<kind>@<host>:<pid>``."""
    return configured or f"{kind}@{socket.gethostname()}:{os.getpid()}"


class ProcessStatus:
    """Heartbeats and readiness of one process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        kind: str,
        health: Callable[[], dict[str, Any]],
        *,
        lag_group: str | None = None,
        owned: Owned | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        h = settings.health
        self.settings = settings
        self.kind = kind
        self.health = health
        self.lag_group = lag_group
        self.owned = owned
        self.clock = clock
        self.id = process_id(kind, h.process_id)
        self.host = socket.gethostname()
        self.interval_s = h.heartbeat_interval.total_seconds()
        self.timeout_s = min(5.0, max(1.0, self.interval_s))
        self.ready_max_lag = h.ready_max_lag
        self.topic = topic_name(settings.kafka, STATUS)
        self.started_ms = int(clock() * 1000)
        self._reasons: list[str] = ["the first status check has not run yet"]
        self._lag: dict[str, int] = {}
        self._errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        conf = producer_config(settings.kafka, self._on_delivery)
        conf.update(
            {
                "delivery.report.only.error": False,
                "message.timeout.ms": int(max(self.interval_s, self.timeout_s) * 2000),
                "queue.buffering.max.messages": 100,
                "linger.ms": 0,
                # the readiness reason says it when the broker does not answer; librdkafka
                # would log every reconnect attempt
                "log_level": 0,
                "log.connection.close": False,
                # a missing status topic is a readiness reason, never one the broker
                # creates with its default settings
                "allow.auto.create.topics": False,
            }
        )
        self.producer = Producer(conf)
        self.admin = admin_client(settings.kafka) if lag_group else None
        self.offsets = lag_probe.CommittedOffsets(settings.kafka) if lag_group else None

    # -- the loop -----------------------------------------------------------------
    def start(self) -> ProcessStatus:
        """Run one round now (readiness known at once), then one every interval."""
        self._thread = threading.Thread(target=self._run, name=f"status-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as e:  # never let the probe kill the process
                log.error("heartbeat_failed", error=repr(e)[:300])
            self._stop.wait(self.interval_s)

    def stop(self, forget: bool = True) -> None:
        """Stop the thread; ``forget``: write a tombstone (a clean stop leaves the status)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s * 3)
        if forget:
            self.producer.produce(self.topic, None, self.id.encode())
            self.producer.flush(self.timeout_s)
        self.producer.purge()  # nothing left to retry against a broker that is gone
        self.producer.flush(0)
        if self.offsets is not None and (self._thread is None or not self._thread.is_alive()):
            self.offsets.close()

    def tick(self) -> Heartbeat:
        """One round: health, lag, publish; the readiness reasons it found."""
        health = self.health()
        reasons: list[str] = []
        figures = figures_from_health(health)
        if self.lag_group is not None:
            behind = self._check_lag()
            if behind is None:
                reasons.append(f"broker unreachable: {self._errors[-1]}")
            else:
                figures["lag"] = sum(behind.values())
                over = {k: v for k, v in behind.items() if v > self.ready_max_lag}
                if over:
                    worst = ", ".join(f"{k} {v}" for k, v in sorted(over.items())[:8])
                    reasons.append(f"catching up a backlog: {worst} records behind")
        now_ms = int(self.clock() * 1000)
        hb = Heartbeat(
            kind=self.kind,
            id=self.id,
            host=self.host,
            pid=os.getpid(),
            version=package_version(),
            started_ms=self.started_ms,
            sent_ms=now_ms,
            interval_ms=max(1, ms(self.settings.health.heartbeat_interval)),
            ready=not (reasons or readiness_reasons(health)),
            reasons=tuple(readiness_reasons(health) + reasons),
            figures=figures,
        )
        if not self._publish(hb):
            reasons.append(self._why_unpublished())
        self._reasons = reasons
        return hb

    def _check_lag(self) -> dict[str, int] | None:
        assert self.admin is not None and self.lag_group is not None
        assert self.offsets is not None
        only = None
        if self.owned is not None:
            only = [(t, p) for t, ps in self.owned().items() for p in ps]
            if not only:
                return {}
        try:
            rows = lag_probe.lag(
                self.admin, [self.lag_group], self.timeout_s, only=only, offsets=self.offsets
            )
        except lag_probe.LagUnavailable as e:
            self._errors = [str(e)[:200]]
            return None
        return {f"{r.topic}[{r.partition}]": r.lag for r in rows}

    def _publish(self, hb: Heartbeat) -> bool:
        self._delivered: KafkaError | bool | None = None
        try:
            self.producer.produce(self.topic, hb.to_bytes(), hb.id.encode())
        except BufferError:
            self.producer.poll(0)
            self._errors = ["heartbeats not delivered: the producer's queue is full"]
            return False
        self.producer.flush(self.timeout_s)
        if self._delivered is True:
            return True
        why = self._delivered if isinstance(self._delivered, KafkaError) else "no answer"
        self._errors = [
            f"heartbeat not acknowledged by {self.settings.kafka.bootstrap_servers} in "
            f"{self.timeout_s:g} s ({why})"
        ]
        return False

    def _why_unpublished(self) -> str:
        """A broker that does not answer, or a status topic that is not there."""
        try:
            md = self.producer.list_topics(self.topic, timeout=self.timeout_s)
        except KafkaException:
            return f"broker unreachable: {self._errors[-1]}"
        t = md.topics.get(self.topic)
        if t is None or t.error is not None:
            return f"status topic {self.topic} missing: run `monitoring broker topics create`"
        return f"broker unreachable: {self._errors[-1]}"

    def _on_delivery(self, err: KafkaError | None, _msg: Any) -> None:
        self._delivered = err if err is not None else True

    # -- for the ApiServer ----------------------------------------------------------
    def reasons(self) -> list[str]:
        """What the last round found in the way of readiness (empty: nothing)."""
        return list(self._reasons)


class FailingReceivers:
    """Which receivers' latest attempts failed, from the notifier's own counter
    (``monitoring_notifier_attempts_total{receiver,outcome}``): a receiver whose failed or
    retrying count grew while its delivered count did not is failing, until a delivery.
    Bounded by the receivers of the notifier's configuration (the counter's labels)."""

    def __init__(self, registry: Any, metric: str = "monitoring_notifier_attempts") -> None:
        self.registry = registry
        self.metric = metric
        self._seen: dict[str, tuple[float, float]] = {}  # receiver -> (delivered, failed)
        self._failing: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self) -> list[str]:
        counts: dict[str, list[float]] = {}
        for m in self.registry.collect():
            if m.name != self.metric:
                continue
            for s in m.samples:
                if not s.name.endswith("_total"):
                    continue
                c = counts.setdefault(s.labels.get("receiver", ""), [0.0, 0.0])
                if s.labels.get("outcome") == "delivered":
                    c[0] += s.value
                elif s.labels.get("outcome") in ("failed", "retrying"):
                    c[1] += s.value
        with self._lock:
            for r, (ok, bad) in counts.items():
                ok0, bad0 = self._seen.get(r, (0.0, 0.0))
                if ok > ok0:
                    self._failing.discard(r)
                elif bad > bad0:
                    self._failing.add(r)
                self._seen[r] = (ok, bad)
            return sorted(self._failing)
