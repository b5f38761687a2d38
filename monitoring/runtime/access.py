"""A process's Kafka permissions checked at start: what its kind needs (``runtime.acls``)
against what the broker says the logged-in user may do (the authorized operations
of each topic and consumer group, KIP-430), so that a missing ACL stops the process
at once, naming every missing permission, rather than failing a fetch, a commit or a
produce later (or, in a client library, retrying for ever).

A resource that cannot be checked (its description fails, or the broker reports no
operations for it: a broker before KIP-430) is a warning naming it, never a pass for
the others. Prefixed bindings (the operators' groups) and transactional ids are not
checked here (a transactional producer fails at once on a missing id:
``runtime.fence``, ``lease``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation

from monitoring.config import KafkaSettings
from monitoring.log import get_logger
from monitoring.runtime.acls import acls, principal
from monitoring.runtime.admin import admin_client
from monitoring.runtime.kafka_client import KafkaAccessDenied

log = get_logger("access")

_OPERATION = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Create": AclOperation.CREATE,
    "Describe": AclOperation.DESCRIBE,
    "DescribeConfigs": AclOperation.DESCRIBE_CONFIGS,
    "Alter": AclOperation.ALTER,
    "AlterConfigs": AclOperation.ALTER_CONFIGS,
}


def needed(kafka: KafkaSettings, role: str) -> dict[tuple[str, str], set[str]]:
    """``{(resource kind, name): operations}`` of role ``role``'s literal topics and
    groups; a prefixed topic binding applies to each of those topics."""
    mine = [a for a in acls(kafka) if a.principal == principal(role)]
    out: dict[tuple[str, str], set[str]] = {}
    literal = [a for a in mine if a.pattern == "literal" and a.resource in ("topic", "group")]
    for a in literal:
        out.setdefault((a.resource, a.name), set()).add(a.operation)
    for a in mine:
        if a.pattern == "prefixed" and a.resource == "topic":
            for kind, name in list(out):
                if kind == "topic" and name.startswith(a.name):
                    out[(kind, name)].add(a.operation)
    return out


def _missing(ops: set[str], allowed: list[AclOperation]) -> list[str]:
    have = set(allowed)
    if AclOperation.ALL in have:
        return []
    return sorted(op for op in ops if _OPERATION[op] not in have)


Authorized = dict[str, list[AclOperation] | None]


def compare(
    want: dict[tuple[str, str], set[str]], topics: Authorized, groups: Authorized
) -> tuple[list[str], list[str]]:
    """``(missing, unchecked)``: each permission of ``want`` the described operations
    lack, as ``"Read on topic 'p.alerts'"``, and each resource that could not be
    checked, as ``"topic 'p.alerts'"``: left out of the descriptions (they failed), or
    reported without operations while others were. When no resource reports
    operations at all (a broker before KIP-430), everything is unchecked."""
    described = {("topic", n): ops for n, ops in topics.items()}
    described |= {("group", n): ops for n, ops in groups.items()}
    reporting = any(ops is not None for ops in described.values())
    missing: list[str] = []
    unchecked: list[str] = []
    for (kind, name), ops in sorted(want.items()):
        allowed = described.get((kind, name))
        if allowed is None or not reporting:
            unchecked.append(f"{kind} {name!r}")
            continue
        missing += [f"{op} on {kind} {name!r}" for op in _missing(ops, allowed)]
    return missing, unchecked


def missing_permissions(kafka: KafkaSettings, role: str, timeout_s: float = 15.0) -> list[str]:
    """What the logged-in user lacks of what ``role`` needs, as ``"Read on topic
    'p.alerts'"``; empty when it has everything. A resource that cannot be checked (its
    description failed for another reason than a refusal within ``timeout_s``, a group
    coordinator still loading; or the broker reports no operations) is logged as a
    warning naming it (``permissions_unchecked``)."""
    want = needed(kafka, role)
    admin = admin_client(kafka)
    deadline = time.monotonic() + timeout_s
    topics = sorted(name for kind, name in want if kind == "topic")
    groups = sorted(name for kind, name in want if kind == "group")

    def describe_topics(names: list[str]) -> dict[str, Future[Any]]:
        return admin.describe_topics(
            TopicCollection(names), include_authorized_operations=True, request_timeout=timeout_s
        )

    def describe_groups(names: list[str]) -> dict[str, Future[Any]]:
        return admin.describe_consumer_groups(
            names, include_authorized_operations=True, request_timeout=timeout_s
        )

    missing, unchecked = compare(
        want,
        _authorized(describe_topics, topics, deadline),
        _authorized(describe_groups, groups, deadline),
    )
    if unchecked:
        log.warning(
            "permissions_unchecked",
            role=role,
            resources=unchecked,
            reason="not described in time, or the broker reports no authorized operations",
        )
    return missing


def _authorized(
    describe: Callable[[list[str]], dict[str, Future[Any]]], names: list[str], deadline: float
) -> dict[str, list[AclOperation] | None]:
    """Each name's authorized operations (``[]``: refused even Describe), retrying the
    names whose description failed otherwise until ``deadline``; those left out."""
    out: dict[str, list[AclOperation] | None] = {}
    todo = list(names)
    while todo:
        failed = []
        for name, fut in describe(todo).items():
            try:
                out[name] = fut.result(max(deadline - time.monotonic(), 1.0)).authorized_operations
            except KafkaException as e:
                if _denied(e):
                    out[name] = []
                else:
                    failed.append(name)
        todo = failed
        if todo and time.monotonic() > deadline:
            break
        if todo:
            time.sleep(0.2)
    return out


def _denied(e: KafkaException) -> bool:
    err = e.args[0] if e.args else None
    return isinstance(err, KafkaError) and err.code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )


def require_permissions(kafka: KafkaSettings, role: str, timeout_s: float = 15.0) -> None:
    """Raise ``KafkaAccessDenied`` naming every permission ``role`` needs that the
    logged-in user lacks."""
    missing = missing_permissions(kafka, role, timeout_s)
    if not missing:
        return
    user = kafka.security.username if kafka.security.sasl else "ANONYMOUS"
    raise KafkaAccessDenied(
        f"Kafka at {kafka.bootstrap_servers} does not allow user {user!r} what the "
        f"{role} needs: {', '.join(missing)}. The principal User:{user} lacks these "
        "ACLs: `monitoring broker acls` prints those each process needs"
    )
