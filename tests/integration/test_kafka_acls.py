"""The ACLs of ``runtime.acls`` on a broker that enforces them (``secure_kafka``:
KRaft's StandardAuthorizer, nothing allowed without an ACL, one SCRAM user per process
kind): sufficient, since every process runs end to end under its own principal, and
tight, since a principal is refused what it does not need, each refusal a clear error
naming the missing permission, not a hang."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from fixtures.notify import HttpReceiver
from fixtures.secure_kafka import security_overrides

from monitoring.config import KafkaSettings
from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.dev.local_kafka import LocalKafka
from monitoring.metrics.collector import MetricsCollector
from monitoring.runtime import consume
from monitoring.runtime.acls import Acl, acls, principal, username
from monitoring.runtime.admin import BrokerAccessDenied, ensure_topics, list_topics
from monitoring.runtime.kafka_client import KafkaAccessDenied, client_config

pytestmark = [pytest.mark.integration, pytest.mark.own_broker]

STRANGER = "monitoring-stranger"  # a user the broker knows, with no ACL
FAIL_WITHIN_S = 60
RULES = """
groups:
  - name: rooms
    rules:
      - alert: RoomHot
        expr: temp > 80
        labels: {severity: critical}
"""
TEN_S = "SELECT count() FROM aggregates FINAL WHERE name = 'temp' AND window_ms = 10000"
DELIVERED = "SELECT count() FROM deliveries WHERE outcome = 'delivered'"
SAMPLES = (
    "SELECT count() FROM samples FINAL WHERE series_id IN "
    "(SELECT series_id FROM series WHERE name = 'temp')"
)


def _as(broker: LocalKafka, user: str) -> dict[str, str]:
    """Settings overrides of a client of ``broker`` logged in as ``user``."""
    return security_overrides(broker, username=user, password_file=str(broker.password_file(user)))


def _kafka(broker: LocalKafka, user: str, prefix: str) -> KafkaSettings:
    k = broker.client_settings(user)
    return k.model_copy(update={"topic_prefix": prefix})


@pytest.fixture(scope="module")
def prefix(secure_kafka: LocalKafka) -> Iterator[str]:
    """A topic prefix whose topics exist (made by the developer's user) and whose ACLs
    are applied; a user without any ACL."""
    p = f"acl{uuid.uuid4().hex[:8]}."
    admin = _kafka(secure_kafka, "monitoring", p)
    ensure_topics(admin)
    secure_kafka.add_users((STRANGER,))
    secure_kafka.apply_acls(acls(admin))
    yield p


def _fails_within(what: Any, bound: float = FAIL_WITHIN_S) -> Exception:
    t0 = time.monotonic()
    with pytest.raises(Exception) as e:
        what()
    assert time.monotonic() - t0 < bound
    return e.value


def _read(kafka: KafkaSettings, topic: str, deadline_s: float) -> None:
    """Read ``topic`` from its start (group ``<prefix>probe``, never committed) until an
    error ends it."""
    c = Consumer(client_config(kafka, **{"group.id": f"{kafka.topic_prefix}probe"}))
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in consume.partitions(c, topic)])
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            consume.fetch(c, 100, 0.2, kafka)
        raise AssertionError(f"read {topic} for {deadline_s}s without a refusal")
    finally:
        c.close()


def _produce(kafka: KafkaSettings, topic: str) -> KafkaError | None:
    """One record to ``topic`` by an idempotent producer: its delivery error, or None."""
    errors: list[KafkaError | None] = []
    p = Producer(client_config(kafka, **{"enable.idempotence": True, "message.timeout.ms": 20_000}))
    p.produce(topic, b"v", key=b"k", on_delivery=lambda err, _m: errors.append(err))
    assert p.flush(30) == 0, f"a record to {topic} still in flight after 30s"
    return errors[0]


def test_the_producer_cannot_read_alerts(secure_kafka: LocalKafka, prefix: str) -> None:
    k = _kafka(secure_kafka, username("producer"), prefix)
    # it has no consumer group at all: refused at the group's coordinator
    e = _fails_within(lambda: _read(k, prefix + "alerts", FAIL_WITHIN_S))
    assert isinstance(e, KafkaAccessDenied), e
    assert "denied user 'monitoring-producer' Read on group (GROUP_AUTHORIZATION_FAILED" in str(e)
    # given a group, the topic itself is refused
    probe = Acl(principal("producer"), "group", prefix + "probe", "literal", "Read")
    secure_kafka.apply_acls([probe])
    e = _fails_within(lambda: _read(k, prefix + "alerts", FAIL_WITHIN_S))
    assert isinstance(e, KafkaAccessDenied), e
    assert f"denied user 'monitoring-producer' Read on topic '{prefix}alerts'" in str(e)
    assert "TOPIC_AUTHORIZATION_FAILED" in str(e)
    assert _produce(k, prefix + "metrics.samples") is None  # what it may do, it does


@pytest.mark.parametrize(
    ("role", "denied", "allowed"),
    [
        ("store", "metrics.aggregates", "dead-letter"),
        ("notifier", "metrics.samples", "alerts.deliveries"),
    ],
)
def test_a_principal_cannot_write_another_kinds_topic(
    secure_kafka: LocalKafka, prefix: str, role: str, denied: str, allowed: str
) -> None:
    k = _kafka(secure_kafka, username(role), prefix)
    t0 = time.monotonic()
    err = _produce(k, prefix + denied)
    assert time.monotonic() - t0 < FAIL_WITHIN_S
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    assert _produce(k, prefix + allowed) is None


def test_an_unknown_principal_cannot_describe_topics(secure_kafka: LocalKafka, prefix: str) -> None:
    k = _kafka(secure_kafka, STRANGER, prefix)
    assert list_topics(_kafka(secure_kafka, username("ops"), prefix), prefix)  # they exist
    assert not list_topics(k, prefix)  # invisible to it
    admin = AdminClient(client_config(k))
    fut = admin.describe_topics(TopicCollection([prefix + "metrics.samples"]))[
        prefix + "metrics.samples"
    ]
    with pytest.raises(Exception, match=r"TOPIC_AUTHORIZATION_FAILED|[Aa]uthoriz"):
        fut.result(30)
    e = _fails_within(lambda: ensure_topics(k, timeout=30))
    assert isinstance(e, BrokerAccessDenied), e
    assert f"denied user '{STRANGER}' Describe (or Create) on topic '{prefix}" in str(e)


@pytest.mark.parametrize(
    ("role", "as_user", "reason"),
    [
        ("store", username("producer"), "allow user 'monitoring-producer' what the store needs"),
        ("worker", username("store"), "Write on topic '{p}metrics.aggregates'"),
        ("notifier", username("alerting"), "Read on group '{p}notifier'"),
        ("worker", STRANGER, f"denied user '{STRANGER}' Describe (or Create) on topic"),
    ],
)
def test_a_process_without_its_acls_fails_at_start_naming_them(
    secure_kafka: LocalKafka, prefix: str, tmp_path: Path, role: str, as_user: str, reason: str
) -> None:
    d = LocalDeployment(
        secure_kafka.bootstrap, tmp_path / "p", prefix, None, **_as(secure_kafka, "monitoring")
    )
    try:
        proc = d.start(role, "bad", **_as(secure_kafka, as_user))
        try:
            code = proc.wait(FAIL_WITHIN_S + 30)
        except Exception:
            raise AssertionError(
                f"{role} as {as_user} still running: it must fail, not hang"
            ) from None
    finally:
        d.stop_all()
    log = (tmp_path / "p" / "bad.log").read_text(errors="replace")
    assert code != 0, log[-2000:]
    assert reason.format(p=prefix) in log, log[-3000:]
    assert "monitoring broker acls" in log
    assert "Traceback" not in log, log[-3000:]


def _recent_start() -> int:
    now = int(time.time() * 1000)
    return now - now % 60_000 - 10 * 60_000


def _alerts_fired(kafka: KafkaSettings, topic: str) -> int:
    """Records of ``topic`` naming the rule (committed ones), read as ``kafka``."""
    c = Consumer(client_config(kafka, **{"group.id": f"{kafka.topic_prefix}check"}))
    try:
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in consume.partitions(c, topic)])
        msgs = consume.fetch(c, 1000, 2.0, kafka)
        return sum(1 for m in msgs if b"RoomHot" in (m.value() or b""))
    finally:
        c.close()


def test_every_process_under_its_own_principal_end_to_end(
    secure_kafka: LocalKafka, tmp_path: Path, http_receiver_factory: Callable[[], HttpReceiver]
) -> None:
    """Producer -> samples -> worker -> aggregates -> store and -> evaluator -> alerts ->
    notifier -> a webhook, its delivery stored: each process its own SCRAM user, limited
    by the ACLs, over SASL_SSL, no authorization error in any log."""
    rules = tmp_path / "rooms.rules.yml"
    rules.write_text(RULES)
    hook = http_receiver_factory()
    routes = tmp_path / "notifier.yml"
    routes.write_text(
        yaml.safe_dump(
            {
                "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "300ms",
                          "group_interval": "1s", "repeat_interval": "1h"},
                "receivers": [{"name": "ops", "webhook_configs": [{"url": f"{hook.url}/hook"}]}],
            }
        )
    )  # fmt: skip
    d = LocalDeployment(
        secure_kafka.bootstrap,
        tmp_path / "p",
        None,
        None,
        alerting__rules=f'["{rules}"]',
        alerting__checkpoint_interval="200ms",
        # the data is ten minutes old and stops: without a long resend interval its
        # alert expires (ends_at) before the notifier's first flush, as in the other
        # notifier tests; no Watchdog either
        alerting__resend_interval="1h",
        alerting__watchdog="false",
        notifier__checkpoint_interval="200ms",
        notifier__config=str(routes),
        notifier__api_port=str(free_port()),
        **_as(secure_kafka, "monitoring"),  # makes the topics, as an administrator would
    )
    secure_kafka.apply_acls(acls(d.settings.kafka))
    try:
        d.start("store", "store", **_as(secure_kafka, username("store")))
        d.wait(d.healthy, 90, f"store healthy\n{d.logs()}")
        d.start("worker", "worker", **_as(secure_kafka, username("worker")))
        d.start("alerting", "alerting", **_as(secure_kafka, username("alerting")))
        d.start("notifier", "notifier", **_as(secure_kafka, username("notifier")))
        producer = d.settings.model_copy(
            update={"kafka": _kafka(secure_kafka, username("producer"), d.prefix)}
        )
        start = _recent_start()
        sent = 0
        with MetricsCollector(producer, batch=True, linger=0.05) as mc:
            for w in range(15):
                for room in ("a", "b"):
                    hot = room == "a" and w >= 10
                    for i in range(10):
                        ts = start + w * 10_000 + i * 1_000
                        mc.record("temp", 90.0 if hot else 50.0, {"room": room}, timestamp_ms=ts)
                        sent += 1
            mc.flush(60)
        d.wait(lambda: d.query(SAMPLES)[0][0] >= sent, 120, f"{sent} samples stored\n{d.logs()}")
        # 10 s windows: 15 per room, closed by the later ones or the idle timeout
        d.wait(
            lambda: d.query(TEN_S)[0][0] >= 2 * 14,
            180,
            f"the worker's aggregates stored\n{d.logs()}",
        )
        rows = d.query(
            "SELECT series, count FROM aggregates FINAL WHERE name = 'temp' AND window_ms = 10000"
        )
        assert {r[1] for r in rows} == {10}, rows  # every window whole
        ops = _kafka(secure_kafka, username("ops"), d.prefix)
        d.wait(
            lambda: _alerts_fired(ops, d.prefix + "alerts") >= 1,
            180,
            f"the evaluator's alert on the alerts topic\n{d.logs()}",
        )
        d.wait(lambda: len(hook.bodies) >= 1, 120, f"the webhook's notification\n{d.logs()}")
        firing = hook.bodies[0]
        assert firing["status"] == "firing"
        assert [a["labels"]["room"] for a in firing["alerts"]] == ["a"]
        d.wait(
            lambda: d.query(DELIVERED)[0][0] >= 1,
            120,
            f"the notifier's delivery in the store\n{d.logs()}",
        )
        for name in ("store", "worker", "alerting", "notifier"):
            assert d.procs[name].poll() is None, f"{name} exited\n{d.logs()}"
    finally:
        d.stop_all()
    text = "\n".join(p.read_text(errors="replace") for p in (tmp_path / "p").glob("*.log"))
    for word in ("AUTHORIZATION_FAILED", "AuthorizationFailed", "lacks an ACL"):
        assert word not in text, f"{word} in the processes' logs"
