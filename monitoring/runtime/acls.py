"""The Kafka ACLs of a shared cluster: one principal per process kind, each allowed
only what it uses. The one source of truth: ``monitoring broker acls`` prints them as
``kafka-acls`` commands or JSON, and the local secure broker applies them (as its
administrator) through the admin client.

>>> from monitoring.config import KafkaSettings
>>> a = acls(KafkaSettings(topic_prefix="p."))
>>> Acl("User:monitoring-producer", "topic", "p.metrics.samples", "literal", "Write") in a
True
>>> any(x.principal == "User:monitoring-store" and x.operation == "Write"
...     and x.name == "p.metrics.aggregates" for x in a)
False
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from monitoring.config import KafkaSettings
from monitoring.runtime import topics as t
from monitoring.runtime.topics import topic_name

if TYPE_CHECKING:
    from confluent_kafka.admin import AclBinding

Resource = Literal["topic", "group", "transactional-id", "cluster"]  # cluster: "kafka-cluster"
Pattern = Literal["literal", "prefixed"]
Operation = Literal[
    "Read", "Write", "Create", "Describe", "DescribeConfigs", "Alter", "AlterConfigs", "All"
]

ROLES = ("producer", "worker", "store", "alerting", "notifier", "ops")
USER_PREFIX = "monitoring-"

_WORKER_STATE = (t.AGGREGATION_STATE, t.ANOMALY_STATE, t.LOG_STATE, t.MODEL_STATE)
_PRODUCED = (t.SAMPLES, t.LOGS, t.PREDICTIONS, t.MODEL_LABELS)


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding (any host): ``principal`` may ``operation`` on the resource."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: Operation


def username(role: str, user_prefix: str = USER_PREFIX) -> str:
    """The SCRAM user of a process kind: ``monitoring-worker``... (``user_prefix``: a
    deployment's own users on a cluster shared with another)."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return user_prefix + role


def principal(role: str, user_prefix: str = USER_PREFIX) -> str:
    return f"User:{username(role, user_prefix)}"


def acls(kafka: KafkaSettings, user_prefix: str = USER_PREFIX) -> list[Acl]:
    """Every binding of every role for ``kafka.topic_prefix``, sorted, no duplicates;
    the principals ``User:<user_prefix><role>``."""
    p = kafka.topic_prefix
    out: set[Acl] = set()
    # groups that only assign partitions and never commit, the store's (t.group_name)
    changelog_reader, idle_check, standby_reader, store = (
        t.group_name(kafka, g)
        for g in (t.CHANGELOG_READER, t.IDLE_CHECK, t.STANDBY_READER, t.STORE_GROUP)
    )

    def allow(
        role: str,
        resource: Resource,
        names: Iterable[str],
        *ops: Operation,
        pattern: Pattern = "literal",
    ) -> None:
        for name in names:
            for op in ops:
                out.add(Acl(principal(role, user_prefix), resource, name, pattern, op))

    def topic(role: str, roles: Iterable[str], *ops: Operation) -> None:
        allow(role, "topic", [topic_name(kafka, r) for r in roles], *ops)

    for role in ROLES:
        # ensure_topics and metadata: describe the prefix's topics and their configs
        allow(role, "topic", [p], "Describe", "DescribeConfigs", pattern="prefixed")
        topic(role, [t.STATUS], "Write")  # heartbeats (ops.heartbeat)

    topic("producer", _PRODUCED, "Write")

    topic("worker", [*_PRODUCED, t.AGGREGATES, *_WORKER_STATE], "Read")
    topic(
        "worker",
        [t.SAMPLES, t.AGGREGATES, t.LATE, t.ANOMALIES, t.LOG_STORED, t.LOG_TEMPLATES,
         t.DEAD_LETTER, *_WORKER_STATE, t.LOGS],  # logs.records: logs.ship_own_logs
        "Write",
    )  # fmt: skip
    allow("worker", "group", [p + "worker", changelog_reader, idle_check], "Read")
    # runtime.fence: one transactional producer per state partition, "<state topic>.p<n>"
    # (fence.transactional_id), written by the worker and by ops' state rebuild
    state_writers = [topic_name(kafka, s) + ".p" for s in _WORKER_STATE]
    for role in ("worker", "ops"):
        allow(role, "transactional-id", state_writers, "Write", "Describe", pattern="prefixed")

    topic(
        "store",
        [t.SAMPLES, t.AGGREGATES, t.ANOMALIES, t.NOTIFY_DELIVERIES, t.LOG_STORED,
         t.LOG_TEMPLATES, t.ALERTS, t.ALERT_COMMANDS],
        "Read",
    )  # fmt: skip
    topic("store", [t.DEAD_LETTER], "Write")
    allow("store", "group", [store], "Read")

    # the HA duties: a group lease on the leases topic, a transactional id per duty
    # fencing a former holder (runtime.lease), a standby tailing the state (runtime.standby)
    for duty in ("alerting", "notifier"):
        topic(duty, [t.LEASES], "Read")
        allow(duty, "group", [p + duty, f"{p}{duty}.lease"], "Read")
        allow(duty, "group", [changelog_reader, standby_reader], "Read")
        allow(duty, "transactional-id", [p + duty], "Write", "Describe")
    topic("alerting", [t.AGGREGATES, t.ALERTING_STATE], "Read")
    topic("alerting", [t.ALERTS, t.ALERTING_STATE, t.SAMPLES, t.DEAD_LETTER], "Write")
    topic("notifier", [t.ALERTS, t.ALERT_COMMANDS, t.NOTIFIER_STATE, t.NOTIFY_DELIVERIES], "Read")
    topic(
        "notifier",
        [t.NOTIFIER_STATE, t.NOTIFY_DELIVERIES, t.ALERT_COMMANDS, t.DEAD_LETTER],
        "Write",
    )

    # the operators' commands (docs/security.md, "What the operators' principal does"):
    # read every topic of the prefix (status, doctor, dlq, backfill, rebuild), write
    # them (dlq replay, rebuild's changelogs, doctor's clock), create and align them
    # (`broker topics create`: Create, AlterConfigs, Alter for --grow; the dlq ledger,
    # doctor.clock), groups of their own and the worker's (rebuild moves its offsets
    # back: Read), every group's lag (Describe), rebuild's fenced changelog writers
    allow("ops", "topic", [p], "Read", "Write", "Create", "Alter", "AlterConfigs",
          pattern="prefixed")  # fmt: skip
    allow("ops", "group", [p], "Read", "Describe", pattern="prefixed")
    allow("ops", "group", [store], "Describe")  # also under the prefixed binding
    return sorted(out)


def to_json(bindings: Sequence[Acl]) -> str:
    """The bindings as a JSON list of objects (one per binding)."""
    return json.dumps([asdict(a) for a in bindings], indent=1)


def kafka_acls_script(
    bindings: Sequence[Acl],
    bootstrap: str = "kafka-1.example:9093",
    prefix: str = "",
    user_prefix: str = USER_PREFIX,
) -> str:
    """``kafka-acls`` commands that create ``bindings`` (admin credentials in
    ``admin.properties``): one command per principal, resource kind, pattern and set of
    operations, naming every resource it covers."""
    grouped: dict[tuple[str, str, str, tuple[str, ...]], list[str]] = {}
    ops: dict[tuple[str, str, str, str], list[str]] = {}
    for a in bindings:
        ops.setdefault((a.principal, a.resource, a.pattern, a.name), []).append(a.operation)
    for (who, resource, pattern, name), names_ops in ops.items():
        key = (who, resource, pattern, tuple(sorted(names_ops)))
        grouped.setdefault(key, []).append(name)
    users = "" if user_prefix == USER_PREFIX else f" --user-prefix {shlex.quote(user_prefix)}"
    lines = [
        f"# generated by: monitoring broker acls --prefix {shlex.quote(prefix)}{users}",
        "A=" + shlex.quote(
            f"kafka-acls --bootstrap-server {bootstrap} --command-config admin.properties"
        ),
    ]  # fmt: skip
    order = {principal(r, user_prefix): i for i, r in enumerate(ROLES)}
    for who, resource, pattern, operations in sorted(
        grouped, key=lambda k: (order.get(k[0], len(order)), k[0], k[1], k[2], k[3])
    ):
        words = ["$A", "--add", "--allow-principal", who]
        words += [w for op in operations for w in ("--operation", op)]
        for name in sorted(grouped[(who, resource, pattern, operations)]):
            words += (
                ["--cluster"] if resource == "cluster" else [f"--{resource}", shlex.quote(name)]
            )
        if pattern == "prefixed":
            words += ["--resource-pattern-type", "prefixed"]
        lines.append(_wrap(words))
    return "\n".join(lines) + "\n"


def _wrap(words: list[str], width: int = 88) -> str:
    """Words joined by spaces, continued with `` \\`` past ``width``; an option stays
    with its value."""
    pairs: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--") and i + 1 < len(words) and not words[i + 1].startswith("--"):
            pairs.append(f"{w} {words[i + 1]}")
            i += 2
        else:
            pairs.append(w)
            i += 1
    lines, line = [], ""
    for part in pairs:
        if line and len(line) + 1 + len(part) > width - 2:
            lines.append(line + " \\")
            line = "   " + part
        else:
            line = f"{line} {part}" if line else part
    lines.append(line)
    return "\n".join(lines)


def to_binding(acl: Acl) -> AclBinding:
    """The confluent-kafka ``AclBinding`` of ``acl`` (for ``AdminClient.create_acls``)."""
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        ResourcePatternType,
        ResourceType,
    )

    resource = {
        "topic": ResourceType.TOPIC,
        "group": ResourceType.GROUP,
        "transactional-id": ResourceType.TRANSACTIONAL_ID,
        "cluster": ResourceType.BROKER,
    }[acl.resource]
    operation = {
        "Read": AclOperation.READ,
        "Write": AclOperation.WRITE,
        "Create": AclOperation.CREATE,
        "Describe": AclOperation.DESCRIBE,
        "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
        "Alter": AclOperation.ALTER,
        "AlterConfigs": AclOperation.ALTER_CONFIGS,
        "All": AclOperation.ALL,
    }[acl.operation]
    pattern = (
        ResourcePatternType.PREFIXED if acl.pattern == "prefixed" else ResourcePatternType.LITERAL
    )
    return AclBinding(
        resource, acl.name, pattern, acl.principal, "*", operation, AclPermissionType.ALLOW
    )
