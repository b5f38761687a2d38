"""The project's Kafka topics: names, partition counts, retention and cleanup policy.

Names are ``<topic_prefix><role>`` (prefix ``monitoring.`` by default), so that
several deployments can share a cluster and tests can use a fresh prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monitoring.config import KafkaSettings, ms

SAMPLES = "metrics.samples"
AGGREGATES = "metrics.aggregates"
LATE = "metrics.late"
AGGREGATION_STATE = "aggregation.state"
LOGS = "logs.records"
ANOMALIES = "anomalies"
ALERTS = "alerts"
DEAD_LETTER = "dead-letter"


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the project creates it."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_name(settings: KafkaSettings, role: str) -> str:
    """Full topic name for a role constant above."""
    return settings.topic_prefix + role


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic with its partitions and configs (retention, cleanup policy)."""
    retention = str(ms(settings.retention))
    max_bytes = str(settings.max_message_bytes)
    delete = {"cleanup.policy": "delete", "retention.ms": retention, "max.message.bytes": max_bytes}
    n_in, n_out = settings.samples_partitions, settings.output_partitions

    def t(role: str, partitions: int, config: dict[str, str]) -> TopicSpec:
        return TopicSpec(topic_name(settings, role), partitions, config)

    return [
        t(SAMPLES, n_in, delete),
        t(AGGREGATES, n_out, delete),
        t(LATE, n_out, delete),
        # Changelog of the aggregation agent's window state: compacted, one
        # partition per samples partition (co-partitioned).
        t(
            AGGREGATION_STATE,
            n_in,
            {
                "cleanup.policy": "compact",
                "max.message.bytes": max_bytes,
                "min.cleanable.dirty.ratio": "0.1",
                "segment.ms": "600000",
            },
        ),
        t(LOGS, n_in, delete),
        t(ANOMALIES, n_out, delete),
        t(ALERTS, n_out, delete),
        t(
            DEAD_LETTER,
            1,
            {
                "cleanup.policy": "delete",
                "retention.ms": str(ms(settings.dead_letter_retention)),
                "max.message.bytes": max_bytes,
            },
        ),
    ]
