"""Kafka administration: wait for the broker, create the project's topics, describe them.

``ensure_topics`` is idempotent: it creates what is missing with explicit partition
counts, replication factor and configs (``monitoring.runtime.topics.topic_specs``),
brings the configs of existing topics in line (retention, cleanup policy, ...) and
refuses, with a clear error, a topic that has fewer partitions than the settings ask
for: growing a keyed topic remaps keys to partitions, so that is an explicit choice
(``grow=True``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ClusterMetadata,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from monitoring.config import KafkaSettings, Settings
from monitoring.runtime.kafka_client import (
    KafkaAccessDenied,
    KafkaTarget,
    access_problem,
    authorization_problem,
    bootstrap_of,
    client_config,
)
from monitoring.runtime.topics import TopicSpec, topic_specs

_log = structlog.get_logger(component="kafka_admin")
T = TypeVar("T")
_rdkafka_log = logging.getLogger("monitoring.rdkafka")


class BrokerUnavailable(RuntimeError):
    """No Kafka broker answered at the bootstrap address in time."""


class BrokerAccessDenied(BrokerUnavailable, KafkaAccessDenied):
    """The broker answered but refused the client's credentials or its TLS handshake
    failed (wrong password, untrusted certificate): retrying will not help."""


class TopicError(RuntimeError):
    """A topic could not be created or has a layout the settings cannot use."""


@dataclass(frozen=True)
class TopicInfo:
    """A topic as the broker describes it."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)  # every effective value
    overrides: dict[str, str] = field(default_factory=dict)  # set on the topic itself


def admin_client(kafka: KafkaTarget, quiet: bool = True, **extra: Any) -> AdminClient:
    """An AdminClient for ``kafka``; ``quiet`` silences librdkafka's connection noise."""
    conf = client_config(
        kafka,
        **{"socket.timeout.ms": 10_000, "log.connection.close": False, "logger": _rdkafka_log},
    )
    if quiet:
        conf["log_level"] = 0
    conf.update(extra)
    return AdminClient(conf)


def _kafka_settings(settings: Settings | KafkaSettings) -> KafkaSettings:
    return settings.kafka if isinstance(settings, Settings) else settings


def wait_for_broker(kafka: KafkaTarget, timeout: float = 30.0) -> ClusterMetadata:
    """Wait until a broker at ``kafka`` returns metadata; raise BrokerUnavailable, or
    BrokerAccessDenied at once when it refuses the credentials or the TLS handshake."""
    denied: list[str] = []

    def on_error(err: KafkaError) -> None:
        problem = access_problem(kafka, err)
        if problem is not None:
            denied.append(problem)

    admin = admin_client(kafka, error_cb=on_error)
    bootstrap = bootstrap_of(kafka)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        remaining = deadline - time.monotonic()
        try:
            md = admin.list_topics(timeout=max(0.5, min(remaining, 5.0)))
            if md.brokers:
                return md
        except KafkaException as e:
            last = e
        admin.poll(0)  # serves error_cb
        if denied:
            raise BrokerAccessDenied(denied[0])
        if time.monotonic() >= deadline:
            why = f": {last}" if last else ""
            raise BrokerUnavailable(f"no Kafka broker answered at {bootstrap} in {timeout}s{why}")
        time.sleep(0.2)


_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_LEADER_EPOCH,  # a broker restarting: offsets_for_times answers it
    KafkaError.FENCED_LEADER_EPOCH,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
}


def with_retries(call: Callable[[], T], timeout: float = 30.0, what: str = "kafka call") -> T:
    """Run ``call``, retrying Kafka's transient errors (leader moves, loading) for ``timeout`` s.

    A freshly created topic can name a leader in the metadata before that broker
    serves it (``NOT_LEADER_FOR_PARTITION``); offset lookups right after creation
    hit that window.

    >>> with_retries(lambda: 42)
    42
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except KafkaException as e:
            err = e.args[0] if e.args else None
            transient = isinstance(err, KafkaError) and (
                err.retriable() or err.code() in _TRANSIENT
            )
            if not transient or time.monotonic() >= deadline:
                raise
            _log.info("kafka_retry", what=what, error=str(err))
            time.sleep(0.2)


def _error_code(e: KafkaException) -> int | None:
    err = e.args[0] if e.args else None
    return err.code() if isinstance(err, KafkaError) else None


def _wait_for_partitions(
    admin: AdminClient, expected: dict[str, int], timeout: float
) -> ClusterMetadata:
    """Wait until every topic shows its partitions, each with a leader."""
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        ready = True
        for name, n in expected.items():
            t = md.topics.get(name)
            if t is None or t.error is not None or len(t.partitions) < n:
                ready = False
                break
            if any(p.leader < 0 for p in t.partitions.values()):
                ready = False
                break
        if ready and _logs_ready(admin, md, expected, deadline):
            return md
        if time.monotonic() >= deadline:
            raise TopicError(f"topics not ready in {timeout}s: {sorted(expected)}")
        time.sleep(0.1)


def _logs_ready(
    admin: AdminClient, md: ClusterMetadata, expected: dict[str, int], deadline: float
) -> bool:
    """Every partition answers ListOffsets, i.e. its leader has created the log.

    Metadata names a leader as soon as the controller has placed the partition; the
    broker creates the log a little later (0.6 s for a hundred partitions here), and
    refuses produce requests in between. Twice a benchmark's just-created samples topic
    lost the first batch of one partition, sent in that window, while the producer
    counted it delivered. The cause inside the client is not confirmed (librdkafka#3712
    describes a similar loss); producing only once the logs exist avoids the window.
    """
    request = {
        TopicPartition(name, p): OffsetSpec.latest()
        for name in expected
        for p in md.topics[name].partitions
    }
    try:
        for fut in admin.list_offsets(
            request, request_timeout=max(1.0, deadline - time.monotonic())
        ).values():
            fut.result()
    except KafkaException:
        return False
    return True


def _wait_for_configs(
    kafka: KafkaTarget, wanted: dict[str, dict[str, str]], timeout: float
) -> None:
    """Wait until the broker describes the altered configs (they apply asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        info = describe_topics(kafka, list(wanted), timeout=timeout)
        if all(
            name in info and all(info[name].config.get(k) == v for k, v in cfg.items())
            for name, cfg in wanted.items()
        ):
            return
        if time.monotonic() >= deadline:
            raise TopicError(f"topic config changes not applied in {timeout}s: {wanted}")
        time.sleep(0.1)


def ensure_topics(
    settings: Settings | KafkaSettings,
    specs: Iterable[TopicSpec] | None = None,
    timeout: float = 30.0,
    grow: bool = False,
    align_configs: bool = True,
) -> dict[str, str]:
    """Create every topic in ``specs`` (default: ``topic_specs(settings)``), idempotently.

    Returns ``{topic: "created" | "exists" | "updated" | "grown"}``. Raises TopicError
    if an existing topic has fewer partitions than its spec (unless ``grow``), or if
    the broker refuses a topic, and BrokerUnavailable if no broker answers.
    """
    kafka = _kafka_settings(settings)
    spec_list = topic_specs(kafka) if specs is None else list(specs)
    bootstrap = kafka.bootstrap_servers
    md = wait_for_broker(kafka, timeout)
    admin = admin_client(kafka, quiet=False)
    result: dict[str, str] = {}

    missing = [
        s for s in spec_list if s.name not in md.topics or md.topics[s.name].error is not None
    ]
    if missing:
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=kafka.replication_factor,
                config=dict(s.config),
            )
            for s in missing
        ]
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout=timeout)
                result[name] = "created"
            except KafkaException as e:
                if _error_code(e) == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # created concurrently: checked below like any existing topic
                err = e.args[0] if e.args else None
                denied = isinstance(err, KafkaError) and authorization_problem(
                    kafka, err, "Describe (or Create)", name
                )
                if denied:  # invisible to this user, or it may not create it
                    raise BrokerAccessDenied(denied) from None
                raise TopicError(f"creating topic {name!r} on {bootstrap}: {e.args[0]}") from e
        # the new ones (an existing topic too small for its spec is grown below)
        md = _wait_for_partitions(admin, {s.name: s.partitions for s in missing}, timeout)

    existing = [s for s in spec_list if s.name not in result]
    grown: dict[str, NewPartitions] = {}
    for spec in existing:
        have = len(md.topics[spec.name].partitions)
        if have < spec.partitions:
            if not grow:
                raise TopicError(
                    f"topic {spec.name!r} has {have} partitions but the settings need "
                    f"{spec.partitions}: growing it remaps keys to partitions; re-run with "
                    "grow=True (CLI: --grow) or delete the topic"
                )
            grown[spec.name] = NewPartitions(spec.name, spec.partitions)
        result[spec.name] = "exists"
    if grown:
        for name, fut in admin.create_partitions(list(grown.values())).items():
            try:
                fut.result(timeout=timeout)
            except KafkaException as e:
                _refused(kafka, e, "Alter", name)
                raise TopicError(f"growing topic {name!r} on {bootstrap}: {e.args[0]}") from e
            result[name] = "grown"
        _wait_for_partitions(admin, {s.name: s.partitions for s in existing}, timeout)

    if align_configs and existing:
        info = describe_topics(kafka, [s.name for s in existing], timeout=timeout)
        changes: list[ConfigResource] = []
        wanted: dict[str, dict[str, str]] = {}
        for spec in existing:
            current = info[spec.name].config
            diff = {k: v for k, v in spec.config.items() if current.get(k) != v}
            if diff:
                wanted[spec.name] = diff
                entries = [
                    ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                    for k, v in diff.items()
                ]
                changes.append(
                    ConfigResource(
                        ConfigResource.Type.TOPIC, spec.name, incremental_configs=entries
                    )
                )
                _log.info("aligning topic config", topic=spec.name, changes=diff)
        if changes:
            for res, fut in admin.incremental_alter_configs(changes).items():
                try:
                    fut.result(timeout=timeout)
                except KafkaException as e:
                    _refused(kafka, e, "AlterConfigs", res.name)
                    raise TopicError(f"updating config of topic {res.name!r}: {e.args[0]}") from e
                if result[res.name] == "exists":
                    result[res.name] = "updated"
            _wait_for_configs(kafka, wanted, timeout)

    created = sorted(n for n, r in result.items() if r == "created")
    if created:
        _log.info("created topics", topics=created, bootstrap=bootstrap)
    return result


def _refused(kafka: KafkaSettings, e: KafkaException, operation: str, topic: str) -> None:
    """Raise ``BrokerAccessDenied`` naming the user, ``operation`` and ``topic`` when
    ``e`` is the authorizer's refusal."""
    err = e.args[0] if e.args else None
    denied = isinstance(err, KafkaError) and authorization_problem(kafka, err, operation, topic)
    if denied:
        raise BrokerAccessDenied(denied) from None


def describe_topics(
    kafka: KafkaTarget, names: Iterable[str], timeout: float = 15.0
) -> dict[str, TopicInfo]:
    """Partitions, replication factor and configs of ``names`` (missing names are skipped)."""
    admin = admin_client(kafka, quiet=False)
    md = admin.list_topics(timeout=timeout)
    wanted = [n for n in names if n in md.topics and md.topics[n].error is None]
    if not wanted:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, n) for n in wanted]
    configs: dict[str, dict[str, str]] = {}
    overrides: dict[str, dict[str, str]] = {}
    for res, fut in admin.describe_configs(resources, request_timeout=timeout).items():
        entries = fut.result(timeout=timeout)
        configs[res.name] = {k: e.value for k, e in entries.items() if e.value is not None}
        overrides[res.name] = {
            k: e.value
            for k, e in entries.items()
            if e.value is not None and e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
        }
    out: dict[str, TopicInfo] = {}
    for name in wanted:
        parts = md.topics[name].partitions
        rf = max((len(p.replicas) for p in parts.values()), default=0)
        out[name] = TopicInfo(name, len(parts), rf, configs[name], overrides[name])
    return out


def list_topics(kafka: KafkaTarget, prefix: str = "", timeout: float = 15.0) -> dict[str, int]:
    """``{topic: partitions}`` for topics starting with ``prefix`` (no internal ``__`` ones)."""
    md = admin_client(kafka).list_topics(timeout=timeout)
    return {
        name: len(t.partitions)
        for name, t in sorted(md.topics.items())
        if name.startswith(prefix) and not name.startswith("__") and t.error is None
    }


def delete_topics(kafka: KafkaTarget, names: Iterable[str], timeout: float = 30.0) -> list[str]:
    """Delete ``names`` (missing ones are ignored); return the names deleted."""
    names = list(names)
    if not names:
        return []
    admin = admin_client(kafka, quiet=False)
    deleted: list[str] = []
    for name, fut in admin.delete_topics(names, operation_timeout=timeout).items():
        try:
            fut.result(timeout=timeout)
            deleted.append(name)
        except KafkaException as e:
            if _error_code(e) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise TopicError(f"deleting topic {name!r}: {e.args[0]}") from e
    return deleted
