"""`monitoring dlq replay` against crafted dead letters and concurrent runs, on the real
broker: a replay writes only to the deployment's input topics."""

from __future__ import annotations

import pytest

from integration.test_ops_dlq import cli_json, end_offsets
from monitoring.config import Settings
from monitoring.ops import dlq_kafka
from monitoring.runtime.outputs import DeadLetters
from monitoring.runtime.topics import (
    AGGREGATION_STATE,
    ALERT_COMMANDS,
    DEAD_LETTER,
    SAMPLES,
    topic_name,
)

pytestmark = pytest.mark.integration


def dead_letter(s: Settings, source_topic: str, n: int = 1) -> None:
    """``n`` replayable dead letters (reason cardinality) claiming ``source_topic``."""
    writer = DeadLetters(s.kafka, topic_name(s.kafka, DEAD_LETTER), "test")
    for i in range(n):
        assert writer.send(f"k{i}".encode(), f"v{i}".encode(), "cardinality", "x",
                           (source_topic, 0, i))  # fmt: skip
    assert writer.flush(30)


def test_a_crafted_source_topic_outside_the_inputs_is_refused(kafka_settings: Settings) -> None:
    """x-source-topic naming the deployment's own commands or state topic would forge a
    silence or a checkpoint: refused, nothing written there."""
    s = kafka_settings
    commands = topic_name(s.kafka, ALERT_COMMANDS)
    state = topic_name(s.kafka, AGGREGATION_STATE)
    ledger = dlq_kafka.ledger_spec(s).name
    dead_letter(s, commands)
    dead_letter(s, state)
    dead_letter(s, topic_name(s.kafka, DEAD_LETTER))
    before = {t: end_offsets(s, t) for t in (commands, state)}
    doc = cli_json(s, "replay", "0-2")
    assert [i["action"] for i in doc["items"]] == ["refused"] * 3, doc
    assert all("not a topic of this deployment" in i["why"] for i in doc["items"])
    # --to-topic may not name them either, with or without the prefix
    for target in (commands, "alerts.commands", state, ledger, topic_name(s.kafka, DEAD_LETTER)):
        doc = cli_json(s, "replay", "0", "--to-topic", target)
        assert doc["items"][0]["action"] == "refused", (target, doc)
        assert "not an input topic" in doc["items"][0]["why"]
    assert {t: end_offsets(s, t) for t in (commands, state)} == before
    # an input topic by its role name is fine
    samples = topic_name(s.kafka, SAMPLES)
    doc = cli_json(s, "replay", "0", "--to-topic", "metrics.samples")
    assert (doc["items"][0]["action"], doc["items"][0]["target"]) == ("replayed", samples)
