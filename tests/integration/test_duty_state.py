"""``monitoring state rebuild alerting|notifier``: the evaluator's and the notifier's
state partition restored with their own code, on the real broker: what a checkpoint
wrote reads back; a record that does not restore is named, exit 1 (the process would
count bad-state and start afresh); --from-source is refused with where to read why."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import STATE_KEY, AlertingAgent
from monitoring.alerts.rules import RuleSet
from monitoring.config import Settings
from monitoring.ops.duty_state import check_duty_state
from monitoring.runtime.kafka_client import client_config
from monitoring.runtime.topics import ALERTING_STATE, NOTIFIER_STATE, topic_name

pytestmark = pytest.mark.integration


def _write(settings: Settings, role: str, key: bytes, value: bytes) -> None:
    p = Producer(client_config(settings.kafka))
    p.produce(topic_name(settings.kafka, role), value, key, partition=0)
    assert p.flush(30) == 0


def test_the_evaluators_state_reads_back_and_a_bad_one_is_named(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory()
    empty = check_duty_state(settings, "alerting")
    assert empty.readable and empty.summary["restored"] is False
    agent = AlertingAgent(settings, CollectorRegistry(), RuleSet())
    agent.clock.last_evaluated_ms = 1_700_000_040_000
    agent._dirty = True
    asyncio.run(agent.checkpoint())  # what the evaluator writes
    report = check_duty_state(settings, "alerting")
    assert report.readable, report.error
    assert report.summary == {"restored": True, "last_evaluated_ms": 1_700_000_040_000, "firing": 0}
    _write(settings, ALERTING_STATE, STATE_KEY, b'{"v": 99}')
    bad = check_duty_state(settings, "alerting")
    assert not bad.readable and "unknown state version 99" in bad.error


def test_the_notifiers_state_and_the_cli(
    settings_factory: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from monitoring.cli import app as cli

    settings = settings_factory()
    assert check_duty_state(settings, "notifier").summary["restored"] is False
    _write(settings, NOTIFIER_STATE, b"positions", b"not json")
    for k, v in {
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
    }.items():
        monkeypatch.setenv(k, v)
    out = CliRunner().invoke(cli, ["state", "rebuild", "notifier"])
    assert out.exit_code == 1 and "FAIL partition 0" in out.output, out.output
    refused = CliRunner().invoke(cli, ["state", "rebuild", "alerting", "--from-source"])
    assert refused.exit_code == 2 and "no --from-source" in refused.output, refused.output
