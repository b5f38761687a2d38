"""`monitoring dlq replay` against crafted dead letters and concurrent runs, on the real
broker: a replay writes only to the deployment's input topics, and two replays of one
selection at the same time send each dead letter once."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from integration.test_ops_dlq import cli_json, end_offsets
from monitoring.config import Settings
from monitoring.ops import dlq_kafka
from monitoring.ops.deadletters import Filter, Selection
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


def test_two_replays_at_once_send_each_dead_letter_once(
    kafka_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both runs read the ledger before either claims (a barrier holds the first to
    finish its read until the other has read too): the worst interleaving."""
    s = kafka_settings
    samples = topic_name(s.kafka, SAMPLES)
    dead_letter(s, samples, n=5)
    letters = dlq_kafka.scan(s, Filter(selection=Selection.parse("0-4"))).letters
    assert len(letters) == 5
    dlq_kafka.replay(s, letters, dry_run=True)  # warms nothing, checks the selection
    before = sum(end_offsets(s, samples).values())

    barrier = threading.Barrier(2, timeout=60)
    real_scan = dlq_kafka._scan_ledger
    first_read: set[int] = set()

    def scan_then_wait(*args: Any, **kwargs: Any) -> Any:
        result = real_scan(*args, **kwargs)
        me = threading.get_ident()
        if me not in first_read:  # each run's first read of the ledger
            first_read.add(me)
            barrier.wait()
        return result

    monkeypatch.setattr(dlq_kafka, "_scan_ledger", scan_then_wait)
    results: dict[str, list[dlq_kafka.ReplayItem]] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            results[name] = dlq_kafka.replay(s, letters)
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert set(results) == {"a", "b"}
    sent = sum(end_offsets(s, samples).values()) - before
    assert sent == 5, f"{sent} records replayed for 5 dead letters"
    per_letter: dict[str, list[str]] = {}
    for items in results.values():
        for i in items:
            per_letter.setdefault(i.letter.coordinates, []).append(i.action)
    assert all(sorted(a) == ["concurrent", "replayed"] for a in per_letter.values()), per_letter
    monkeypatch.setattr(dlq_kafka, "_scan_ledger", real_scan)
    # afterwards the ledger says replayed, whoever won
    later = dlq_kafka.replay(s, letters)
    assert {i.action for i in later} == {"already"}
