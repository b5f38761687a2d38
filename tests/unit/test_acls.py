"""The ACLs of a shared cluster (``runtime.acls``): every topic the project makes is
covered, each principal is limited to what it uses, the docs show exactly what
``monitoring broker acls`` prints."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.config import KafkaSettings, Settings
from monitoring.runtime import topics as t
from monitoring.runtime.acls import (
    ROLES,
    Acl,
    acls,
    kafka_acls_script,
    principal,
    to_binding,
)
from monitoring.runtime.topics import topic_specs
from monitoring.sinks.clickhouse.store import store_group

ROOT = Path(__file__).resolve().parents[2]
K = KafkaSettings(topic_prefix="p.")


def _can(role: str, op: str, name: str, resource: str = "topic") -> bool:
    """Whether ``role`` may ``op`` on ``name`` (literal match, or a prefixed binding)."""
    for a in acls(K):
        if a.principal != principal(role) or a.resource != resource or a.operation != op:
            continue
        if a.name == name or (a.pattern == "prefixed" and name.startswith(a.name)):
            return True
    return False


def test_every_topic_is_written_and_read_by_someone_besides_ops() -> None:
    for spec in topic_specs(K):
        writers = [r for r in ROLES if r != "ops" and _can(r, "Write", spec.name)]
        readers = [r for r in ROLES if r != "ops" and _can(r, "Read", spec.name)]
        if spec.name == "p." + t.LEASES:
            assert readers == ["alerting", "notifier"] and not writers  # never written
        elif spec.name == "p." + t.STATUS:
            assert writers == list(ROLES[:-1])  # heartbeats; read by ops (status)
        elif spec.name in ("p." + t.LATE, "p." + t.DEAD_LETTER):
            assert writers and not readers  # read by operators (dlq, backfill)
        else:
            assert writers and readers, spec.name


def test_each_principal_is_limited_to_what_it_uses() -> None:
    assert not [
        a for a in acls(K) if a.principal == principal("producer") and a.operation == "Read"
    ]
    assert not _can("producer", "Read", "p.alerts")
    assert not _can("store", "Write", "p.metrics.aggregates")
    assert not _can("notifier", "Write", "p.metrics.samples")
    assert not _can("worker", "Write", "p.alerts")
    assert not _can("alerting", "Write", "p.alerts.commands")
    store_writes = {
        a.name for a in acls(K) if a.principal == principal("store") and a.operation == "Write"
    }
    assert store_writes == {"p.dead-letter", "p.status"}
    # prefixed topic reads and writes, creation: only the operators' principal
    broad = {a.principal for a in acls(K) if a.pattern == "prefixed" and a.resource == "topic"
             and a.operation in ("Read", "Write", "Create")}  # fmt: skip
    assert broad == {principal("ops")}
    # a duty's transactional id is its own: the worker cannot fence the evaluator
    assert _can("alerting", "Write", "p.alerting", "transactional-id")
    assert not _can("worker", "Write", "p.alerting", "transactional-id")
    assert _can("worker", "Write", "p.aggregation.state.p3", "transactional-id")
    # no role may commit into another's group
    assert not _can("worker", "Read", "p.store", "group")
    assert not _can("store", "Read", "p.worker", "group")


def test_the_groups_granted_are_the_groups_the_code_uses() -> None:
    granted = {a.name for a in acls(K) if a.resource == "group" and a.pattern == "literal"}
    fixed = {t.group_name(K, g) for g in (t.STORE_GROUP, t.CHANGELOG_READER, t.IDLE_CHECK,
             t.STANDBY_READER)}  # fmt: skip
    assert store_group(Settings(kafka=K)) == "p.store"
    assert fixed <= granted, fixed - granted
    # no group of a fixed name outside the prefix: two deployments would share it
    literal = set()
    for path in (ROOT / "monitoring").rglob("*.py"):
        if "bench" in path.parts or "dev" in path.parts:
            continue
        lines = path.read_text().splitlines()
        text = "\n".join(x for x in lines if not x.lstrip().startswith(">>>"))  # not doctests
        literal |= set(re.findall(r'"group\.id": "([^"{]+)"', text))
        literal |= set(re.findall(r'consumer_config\(\s*\w+(?:\.\w+)*,\s*"([^"]+)"', text))
        literal |= set(re.findall(r'consumer_config\(\s*\w+(?:\.\w+)*,\s*f"([^{][^"]*)"', text))
    assert not literal, literal


def test_groups_follow_the_prefix_so_tenants_never_share_one() -> None:
    a, b = KafkaSettings(topic_prefix="a."), KafkaSettings(topic_prefix="b.")
    for g in (t.STORE_GROUP, t.CHANGELOG_READER, t.IDLE_CHECK, t.STANDBY_READER):
        assert t.group_name(a, g) == "a." + g and t.group_name(b, g) == "b." + g
        assert t.group_name(KafkaSettings(topic_prefix=""), g) == "monitoring-" + g


def test_bindings_are_unique_sorted_and_follow_the_prefix() -> None:
    a = acls(K)
    assert a == sorted(set(a))
    other = acls(KafkaSettings(topic_prefix="q-"))
    assert len(other) == len(a)
    assert not [x for x in other if x.name.startswith("p.")]


def test_to_binding_and_the_cluster() -> None:
    cluster = Acl("User:u", "cluster", "kafka-cluster", "literal", "All")
    assert to_binding(cluster).restype is ResourceType.BROKER
    assert "--operation All --cluster" in kafka_acls_script([cluster])

    b = to_binding(Acl("User:u", "transactional-id", "p.x", "prefixed", "DescribeConfigs"))
    assert b.restype is ResourceType.TRANSACTIONAL_ID
    assert b.resource_pattern_type is ResourcePatternType.PREFIXED
    assert b.operation is AclOperation.DESCRIBE_CONFIGS
    assert (b.principal, b.host, b.name) == ("User:u", "*", "p.x")


def test_the_script_names_every_binding_once() -> None:
    script = kafka_acls_script(acls(K), "b:9093", "p.")
    words = script.replace("\\\n", " ").split()
    assert words.count("--add") == script.count("$A --add")
    n = 0
    for line in script.replace("\\\n", " ").splitlines()[2:]:
        w = line.split()
        ops = sum(1 for x in w if x == "--operation")
        names = sum(1 for x in w if x in ("--topic", "--group", "--transactional-id"))
        n += ops * names
    assert n == len(acls(K))


def test_the_docs_show_the_generated_script() -> None:
    doc = (ROOT / "docs" / "security.md").read_text()
    command = "monitoring broker acls --prefix monitoring. --bootstrap kafka-1.example:9093"
    marker = f"<!-- generated: {command} -->"
    assert marker in doc
    block = doc.split(marker, 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    expected = kafka_acls_script(
        acls(KafkaSettings(topic_prefix="monitoring.")), "kafka-1.example:9093", "monitoring."
    )
    assert block == expected, f"regenerate the block: {command}"


def test_cli_prints_both_formats_and_refuses_a_bad_prefix() -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["broker", "acls", "--prefix", "p.", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [Acl(**x) for x in json.loads(res.stdout)] == acls(K)
    res = runner.invoke(app, ["broker", "acls", "--prefix", "p.", "--bootstrap", "b:9093"])
    assert res.exit_code == 0 and res.stdout == kafka_acls_script(acls(K), "b:9093", "p.")
    assert runner.invoke(app, ["broker", "acls", "--prefix", "a b"]).exit_code == 2
    assert runner.invoke(app, ["broker", "acls", "--format", "xml"]).exit_code == 2


@pytest.mark.parametrize(
    "args",
    [
        ["--prefix", ""],  # a prefixed binding on '' covers every topic and group
        ["--prefix", "p"],  # a prefixed binding on 'p' covers 'payments.*'
        ["--prefix", "monitoring"],
        ["--bootstrap", "x:1 --command-config /tmp/evil.properties"],  # word splitting
        ["--bootstrap", "h*:9093"],  # a glob
        ["--bootstrap", "$(id):9093"],
        ["--user-prefix", "a b-"],  # word splitting in the script
        ["--user-prefix", "$(id)"],
        ["--user-prefix", ""],
    ],
)
@pytest.mark.filterwarnings("ignore:kafka.topic_prefix:UserWarning")
def test_cli_refuses_a_prefix_or_bootstrap_the_script_could_not_carry(args: list[str]) -> None:
    res = CliRunner().invoke(app, ["broker", "acls", "--prefix", "p.", *args])
    assert res.exit_code == 2, res.output
    assert "kafka-acls" not in res.stdout


def test_a_prefix_without_a_separator_is_refused_naming_why() -> None:
    with pytest.warns(UserWarning, match="does not end in"):  # the settings' own warning
        res = CliRunner().invoke(app, ["broker", "acls", "--prefix", "p"])
    assert res.exit_code == 2, res.output
    assert "'pother.metrics.samples'" in res.output and "end it with '.'" in res.output
    for ok in ("p.", "p-", "p_"):
        assert CliRunner().invoke(app, ["broker", "acls", "--prefix", ok]).exit_code == 0


def test_settings_warn_of_a_prefix_without_a_separator() -> None:
    with pytest.warns(UserWarning, match="does not end in"):
        KafkaSettings(topic_prefix="acme")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ok in ("acme.", "acme-", "acme_", ""):
            KafkaSettings(topic_prefix=ok)


def test_a_deployment_of_its_own_has_users_of_its_own() -> None:
    """Two deployments on one cluster: the same kinds, different principals, so neither
    deployment's users are granted the other's topics."""
    prod, staging = KafkaSettings(topic_prefix="prod."), KafkaSettings(topic_prefix="stg.")
    a, b = acls(prod), acls(staging, "stg-")
    assert {x.principal for x in b} == {f"User:stg-{r}" for r in ROLES}
    assert not {x.principal for x in a} & {x.principal for x in b}
    assert all(x.name.startswith("stg.") for x in b if x.resource != "cluster")
    res = CliRunner().invoke(
        app, ["broker", "acls", "--prefix", "stg.", "--user-prefix", "stg-", "--bootstrap", "b:1"]
    )
    assert res.exit_code == 0, res.output
    assert res.stdout == kafka_acls_script(b, "b:1", "stg.", "stg-")
    assert "--user-prefix stg-" in res.stdout.splitlines()[0]
    assert "User:monitoring-" not in res.stdout
