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
LOG_STORED = "logs.stored"
LOG_TEMPLATES = "logs.templates"
LOG_STATE = "logs.state"
ANOMALIES = "anomalies"
ANOMALY_STATE = "anomaly.state"
ALERTS = "alerts"
ALERTING_STATE = "alerts.state"
ALERT_COMMANDS = "alerts.commands"
NOTIFIER_STATE = "alerts.notifier.state"
NOTIFY_DELIVERIES = "alerts.deliveries"  # the notifiers' delivery log
PREDICTIONS = "models.predictions"  # model predictions, key = prediction id
MODEL_LABELS = "models.labels"  # their true outcomes, key = prediction id
MODEL_STATE = "models.state"  # the model metrics agent's join and River state
DEAD_LETTER = "dead-letter"
STATUS = "status"  # every process's heartbeat, key = process id (monitoring.ops.heartbeat)
LEASES = "leases"  # empty: its one partition is each duty's group lease (runtime.lease)


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the project creates it."""

    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_name(settings: KafkaSettings, role: str) -> str:
    """Full topic name for a role constant above."""
    return settings.topic_prefix + role


# the project's consumer groups of a fixed name (``group_name``); the worker's and the
# HA duties' are ``<prefix>worker``, ``<prefix>alerting``...
STORE_GROUP = "store"  # sinks/clickhouse/store.py: commits what it stored
CHANGELOG_READER = "changelog-reader"  # runtime/changelog.py: never commits
IDLE_CHECK = "idle-check"  # runtime/faust_app.py: never commits
STANDBY_READER = "standby-reader"  # runtime/standby.py: never commits


def group_name(settings: KafkaSettings | str, name: str) -> str:
    """A fixed consumer group under the topic prefix, so that two deployments sharing a
    cluster never share one; with no prefix (or only a bootstrap address) the name it
    always had.

    >>> group_name(KafkaSettings(topic_prefix="e1."), STORE_GROUP)
    'e1.store'
    >>> group_name(KafkaSettings(topic_prefix=""), STORE_GROUP)
    'monitoring-store'
    """
    prefix = "" if isinstance(settings, str) else settings.topic_prefix
    return prefix + name if prefix else "monitoring-" + name


def topic_specs(settings: KafkaSettings) -> list[TopicSpec]:
    """Every topic with its partitions and configs (retention, cleanup policy)."""
    retention = str(ms(settings.retention))
    max_bytes = str(settings.max_message_bytes)
    delete = {"cleanup.policy": "delete", "retention.ms": retention, "max.message.bytes": max_bytes}
    n_in, n_out = settings.samples_partitions, settings.output_partitions
    compacted = {
        "cleanup.policy": "compact",
        "max.message.bytes": max_bytes,
        "min.cleanable.dirty.ratio": "0.1",
        "segment.ms": "600000",
    }

    def t(role: str, partitions: int, config: dict[str, str]) -> TopicSpec:
        return TopicSpec(topic_name(settings, role), partitions, config)

    return [
        t(SAMPLES, n_in, delete),
        t(AGGREGATES, n_out, delete),
        t(LATE, n_out, delete),
        # Changelog of the aggregation agent's window state: compacted, one
        # partition per samples partition (co-partitioned).
        t(AGGREGATION_STATE, n_in, compacted),
        # Detector state of the anomaly agent, co-partitioned with the aggregates.
        t(ANOMALY_STATE, n_out, compacted),
        t(LOGS, n_in, delete),
        # Log agent outputs (key = service) and its compacted drain3/counter state,
        # co-partitioned with the logs topic.
        t(LOG_STORED, n_in, delete),
        t(LOG_TEMPLATES, n_in, delete),
        t(LOG_STATE, n_in, compacted),
        t(ANOMALIES, n_out, delete),
        t(ALERTS, n_out, delete),
        # The alert evaluator and the notifier see every partition: one-partition state.
        t(ALERTING_STATE, 1, compacted),
        t(NOTIFIER_STATE, 1, compacted),
        # Silences and acknowledgements, keyed by silence id / ack target: compacted,
        # so every notifier (and `monitoring alerts silence list`) reads them all.
        t(ALERT_COMMANDS, 1, compacted),
        t(NOTIFY_DELIVERIES, n_out, delete),
        # Never written: the member of `<prefix><duty>.lease` assigned its partition is
        # the active evaluator / notifier (runtime/lease.py).
        t(LEASES, 1, delete),
        # Model predictions and labels, both keyed by prediction id and co-partitioned
        # with the samples topic (so one worker joins a partition of both), and the
        # model metrics agent's compacted join state, one partition per source partition.
        t(PREDICTIONS, n_in, delete),
        t(MODEL_LABELS, n_in, delete),
        t(MODEL_STATE, n_in, compacted),
        # Heartbeats: compacted (the latest per process) and deleted after
        # kafka.status_retention (a day), so a process killed for good drops out of
        # `monitoring status` by itself.
        t(
            STATUS,
            1,
            {
                **compacted,
                "cleanup.policy": "compact,delete",
                "retention.ms": str(ms(settings.status_retention)),
            },
        ),
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
