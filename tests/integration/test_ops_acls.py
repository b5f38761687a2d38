"""The operators' commands under the ops principal (``User:monitoring-ops``) on a broker
that enforces the ACLs of ``runtime.acls`` (``secure_kafka``): each runs with exactly
what it is granted, and a user without a grant gets a clear error, not a hang or a
traceback. The CLI runs as a real process (``.venv/bin/monitoring``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)
from fixtures.secure_kafka import security_overrides

from monitoring.config import KafkaSettings
from monitoring.dev.local_kafka import LocalKafka
from monitoring.runtime import topics as t
from monitoring.runtime.acls import Acl, acls, principal, username
from monitoring.runtime.admin import admin_client, ensure_topics, list_topics
from monitoring.runtime.kafka_client import client_config
from monitoring.runtime.outputs import DeadLetters
from monitoring.runtime.topics import topic_name, topic_specs
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.own_broker]

MONITORING = str(Path(sys.executable).parent / "monitoring")
RUN_WITHIN_S = 120  # a command that would hang is stopped here and fails the test
LITE = "monitoring-opslite"  # the ops grants minus Alter, AlterConfigs, transactional ids
MISSING = t.LATE  # a topic left to the ops user to create
SMALL = t.ANOMALIES  # made with one partition: `--grow` grows it (Alter)
DRIFTED = t.ALERTS  # its retention changed: `broker topics create` aligns it (AlterConfigs)


def _kafka(broker: LocalKafka, user: str, prefix: str) -> KafkaSettings:
    return broker.client_settings(user).model_copy(update={"topic_prefix": prefix})


def _env(broker: LocalKafka, user: str, prefix: str) -> dict[str, str]:
    sec = security_overrides(broker, username=user, password_file=str(broker.password_file(user)))
    env = {f"MONITORING_{k.upper()}": v for k, v in sec.items()}
    return {
        **os.environ,
        **env,
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "MONITORING_KAFKA__TOPIC_PREFIX": prefix,
        "MONITORING_CONFIG": "",
        "COLUMNS": "200",
    }


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [MONITORING, *args], env=env, capture_output=True, text=True, timeout=RUN_WITHIN_S
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"monitoring {' '.join(args)} still running: a hang") from None


def _clean(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    for word in ("Traceback", "AUTHORIZATION_FAILED", "AuthorizationFailed"):
        assert word not in out, out[-3000:]
    return out


@pytest.fixture(scope="module")
def prefix(secure_kafka: LocalKafka) -> Iterator[str]:
    """A prefix whose topics the administrator made, except ``MISSING``, with ``SMALL``
    one partition short and ``DRIFTED``'s retention changed; its ACLs applied; a dead
    letter of a replayable sample."""
    p = f"ops{uuid.uuid4().hex[:8]}."
    admin = _kafka(secure_kafka, "monitoring", p)
    specs = {s.name: s for s in topic_specs(admin)}
    small = specs[topic_name(admin, SMALL)]
    assert small.partitions > 1
    made = [s for n, s in specs.items() if n not in (topic_name(admin, MISSING), small.name)]
    ensure_topics(admin, made)
    client = admin_client(admin)
    for f in client.create_topics(
        [NewTopic(small.name, num_partitions=1, replication_factor=1, config=dict(small.config))]
    ).values():
        f.result(30)
    drifted = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic_name(admin, DRIFTED),
        incremental_configs=[
            ConfigEntry("retention.ms", "3600000", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    for f in client.incremental_alter_configs([drifted]).values():
        f.result(30)
    secure_kafka.add_users((LITE,))
    bindings = acls(admin)
    lite = [
        Acl(principal=f"User:{LITE}", resource=a.resource, name=a.name, pattern=a.pattern,
            operation=a.operation)
        for a in bindings
        if a.principal == principal("ops")
        and a.operation not in ("Alter", "AlterConfigs")
        and a.resource != "transactional-id"
    ]  # fmt: skip
    secure_kafka.apply_acls([*bindings, *lite])
    # one sample and its dead letter (reason cardinality: replayable), as the worker would
    codec = AvroCodec.from_directory()
    sample = {"name": "ops_probe", "value": 1.0, "timestamp_ms": int(time.time() * 1000),
              "labels": {"host": "a"}}  # fmt: skip
    value = codec.encode("monitoring.MetricSample", sample)
    samples = topic_name(admin, t.SAMPLES)
    where: list[tuple[int, int]] = []
    producer = Producer(client_config(admin))
    producer.produce(
        samples, value, b"k", on_delivery=lambda e, m: where.append((m.partition(), m.offset()))
    )
    assert producer.flush(30) == 0 and where
    dead = DeadLetters(admin, topic_name(admin, t.DEAD_LETTER), "test")
    assert dead.send(b"k", value, "cardinality", "test", (samples, *where[0]))
    assert dead.flush(30)
    dead.close()
    del producer
    yield p


def test_the_ops_commands_run_under_the_ops_principal(
    secure_kafka: LocalKafka, prefix: str, tmp_path: Path
) -> None:
    env = _env(secure_kafka, username("ops"), prefix)
    res = _run(env, "status", "--json", "--timeout", "10")
    _clean(res)
    report = json.loads(res.stdout)
    assert not report["errors"], report["errors"]  # heartbeats, lag and dead letters read
    assert report["dead_letters_last_hour"] == {"cardinality": 1}, report

    res = _run(env, "doctor", "--json")
    _clean(res)
    checks = {c["check"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["clock"]["status"] == "OK", checks  # it made and wrote doctor.clock
    for name, c in checks.items():
        text = json.dumps(c).lower()
        assert "denied" not in text and "not allowed" not in text, (name, c)

    res = _run(env, "dlq", "list", "--json")
    _clean(res)
    assert json.loads(res.stdout)["total"] == 1, res.stdout
    res = _run(env, "dlq", "show", "0", "--json")
    _clean(res)
    assert json.loads(res.stdout)["records"][0]["reason"] == "cardinality"
    res = _run(env, "dlq", "replay", "0", "--json")
    _clean(res)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["summary"] == {"replayed": 1}, res.stdout

    # backfill: the store's topics read by a group of its own, into an embedded chDB
    res = _run(
        {**env, "MONITORING_STORAGE__DSN": f"chdb://{tmp_path / 'chdb'}"},
        *("store", "backfill", "--from", "1h", "--json"),
    )
    _clean(res)
    assert res.returncode == 0, res.stdout + res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["messages"] >= 2, summary  # the sample, replayed

    # rebuild: the worker group's offsets, the sources read, the changelog written by
    # fenced transactional writers
    res = _run(env, "state", "rebuild", "aggregation", "--from-source", "--from", "1h", "--json")
    _clean(res)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["messages"] >= 1, res.stdout


def test_without_a_grant_an_ops_command_fails_naming_it(
    secure_kafka: LocalKafka, prefix: str
) -> None:
    """`broker topics create --grow` without Alter and AlterConfigs, rebuild without
    its transactional ids: a clear refusal naming the user, the operation and the
    resource; with the grants the small topic grown, the drifted one aligned."""
    res = _run(_env(secure_kafka, LITE, prefix), "broker", "topics", "create", "--grow")
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "Traceback" not in out, out[-3000:]
    assert f"denied user '{LITE}' Alter on topic '{prefix}{SMALL}'" in " ".join(out.split())
    # what it may do, it did: the missing topic made
    ops = _kafka(secure_kafka, username("ops"), prefix)
    assert prefix + MISSING in list_topics(ops, prefix)

    # rebuild's fenced writers: their transactional ids refused, named
    res = _run(
        _env(secure_kafka, LITE, prefix),
        *("state", "rebuild", "aggregation", "--from-source", "--from", "1h"),
    )
    out = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, out
    assert "Traceback" not in out, out[-3000:]
    txn = f"{prefix}{t.AGGREGATION_STATE}.p0"
    assert f"denied user '{LITE}' Write on transactional id '{txn}'" in out, out[-3000:]

    res = _run(_env(secure_kafka, username("ops"), prefix), "broker", "topics", "create", "--grow")
    out = _clean(res)
    assert res.returncode == 0, out
    assert _action(res.stdout, prefix + SMALL) == "grown", out
    assert _action(res.stdout, prefix + DRIFTED) == "updated", out


def _action(table: str, topic: str) -> str:
    """The last word of ``topic``'s row in ``broker topics create``'s table."""
    for line in table.splitlines():
        if re.search(rf"(^|[\s│]){re.escape(topic)}[\s│]", line):
            return line.replace("│", " ").split()[-1]
    raise AssertionError(f"no row of {topic} in\n{table}")
