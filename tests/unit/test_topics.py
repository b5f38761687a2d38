"""Topic layout: names, partition counts, cleanup policies and retention from settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitoring.config import KafkaSettings, Settings
from monitoring.runtime import topics as t
from monitoring.runtime.topics import TopicSpec, topic_name, topic_specs

ROLES = [
    t.SAMPLES,
    t.AGGREGATES,
    t.LATE,
    t.AGGREGATION_STATE,
    t.LOGS,
    t.LOG_STORED,
    t.LOG_TEMPLATES,
    t.LOG_STATE,
    t.ANOMALIES,
    t.ANOMALY_STATE,
    t.ALERTS,
    t.ALERTING_STATE,
    t.ALERT_COMMANDS,
    t.NOTIFIER_STATE,
    t.NOTIFY_DELIVERIES,
    t.PREDICTIONS,
    t.MODEL_LABELS,
    t.MODEL_STATE,
    t.DEAD_LETTER,
    t.LEASES,
    t.STATUS,
]


def by_role(settings: KafkaSettings) -> dict[str, TopicSpec]:
    specs = {s.name: s for s in topic_specs(settings)}
    return {role: specs[topic_name(settings, role)] for role in ROLES}


def test_every_role_has_one_topic_with_the_prefix() -> None:
    ks = KafkaSettings(topic_prefix="acme.")
    specs = topic_specs(ks)
    assert sorted(s.name for s in specs) == sorted(f"acme.{r}" for r in ROLES)
    assert len({s.name for s in specs}) == len(specs)


def test_default_prefix_and_names() -> None:
    ks = Settings.load(None).kafka
    assert topic_name(ks, t.SAMPLES) == ks.topic_prefix + "metrics.samples"
    assert all(s.name.startswith(ks.topic_prefix) for s in topic_specs(ks))


def test_partition_counts() -> None:
    specs = by_role(KafkaSettings())
    assert specs[t.SAMPLES].partitions >= 6  # the unit of worker parallelism
    assert specs[t.LOGS].partitions >= 6
    for role in (t.AGGREGATES, t.LATE, t.ANOMALIES, t.ALERTS):
        assert specs[role].partitions >= 6
    assert specs[t.DEAD_LETTER].partitions == 1


def test_partition_counts_follow_settings() -> None:
    specs = by_role(KafkaSettings(samples_partitions=12, output_partitions=3))
    assert specs[t.SAMPLES].partitions == 12
    assert specs[t.LOGS].partitions == 12
    assert specs[t.AGGREGATES].partitions == 3
    assert specs[t.ALERTS].partitions == 3


def test_state_changelog_is_compacted_and_co_partitioned() -> None:
    specs = by_role(KafkaSettings(samples_partitions=9))
    state = specs[t.AGGREGATION_STATE]
    assert state.config["cleanup.policy"] == "compact"
    assert "retention.ms" not in state.config  # compaction keeps the latest state per key
    assert state.partitions == specs[t.SAMPLES].partitions == 9


STATE = (
    t.AGGREGATION_STATE,
    t.LOG_STATE,
    t.ANOMALY_STATE,
    t.MODEL_STATE,
    t.ALERTING_STATE,
    t.NOTIFIER_STATE,
    t.ALERT_COMMANDS,
)


@pytest.mark.parametrize("role", STATE)
def test_state_topics_are_compacted(role: str) -> None:
    spec = by_role(KafkaSettings())[role]
    assert spec.config["cleanup.policy"] == "compact"
    assert "retention.ms" not in spec.config


def test_single_consumer_state_has_one_partition() -> None:
    specs = by_role(KafkaSettings())
    for role in (t.ALERTING_STATE, t.NOTIFIER_STATE, t.ALERT_COMMANDS):
        assert specs[role].partitions == 1
    assert specs[t.ANOMALY_STATE].partitions == specs[t.AGGREGATES].partitions


def test_status_topic_keeps_the_latest_heartbeat_for_a_day() -> None:
    spec = by_role(KafkaSettings())[t.STATUS]
    assert spec.partitions == 1
    assert spec.config["cleanup.policy"] == "compact,delete"
    assert spec.config["retention.ms"] == str(86_400_000)


def test_status_retention_comes_from_settings() -> None:
    """kafka.status_retention sets the status topic's retention.ms (created with it, and
    compared by the doctor's topics check, which reads the same specs)."""
    from monitoring.ops.kafka_checks import topic_problems
    from monitoring.runtime.admin import TopicInfo

    spec = by_role(KafkaSettings(status_retention="6h"))[t.STATUS]
    assert spec.config["retention.ms"] == str(6 * 3_600_000)
    day = TopicInfo(spec.name, 1, 1, {**spec.config, "retention.ms": str(86_400_000)})
    problems = topic_problems([spec], {spec.name: day})
    assert [p for _, p in problems] == [
        f"{spec.name}: retention.ms 86400000, settings say {6 * 3_600_000}"
    ]


@pytest.mark.parametrize("role", [r for r in ROLES if r not in (*STATE, t.STATUS)])
def test_event_topics_delete_with_retention(role: str) -> None:
    spec = by_role(KafkaSettings())[role]
    assert spec.config["cleanup.policy"] == "delete"
    assert int(spec.config["retention.ms"]) > 0


def test_retention_values_come_from_settings() -> None:
    ks = KafkaSettings(retention="3d", dead_letter_retention="30d")
    specs = by_role(ks)
    three_days = str(3 * 86_400_000)
    for role in (t.SAMPLES, t.AGGREGATES, t.LATE, t.LOGS, t.ANOMALIES, t.ALERTS):
        assert specs[role].config["retention.ms"] == three_days
    assert specs[t.DEAD_LETTER].config["retention.ms"] == str(30 * 86_400_000)


def test_default_retention() -> None:
    specs = by_role(KafkaSettings())
    week_ms = int(timedelta(days=7).total_seconds()) * 1000
    assert specs[t.SAMPLES].config["retention.ms"] == str(week_ms)
    assert specs[t.DEAD_LETTER].config["retention.ms"] == str(14 * 86_400_000)


def test_max_message_bytes_on_every_topic() -> None:
    ks = KafkaSettings(max_message_bytes=8 * 1024 * 1024)
    for spec in topic_specs(ks):
        assert spec.config["max.message.bytes"] == str(8 * 1024 * 1024)


def test_configs_are_strings() -> None:
    # The admin API takes string values only.
    for spec in topic_specs(KafkaSettings()):
        assert all(isinstance(v, str) for v in spec.config.values()), spec.name
