"""The Faust application every worker runs, configured from Settings.

One consumer group per app id: start more ``monitoring worker`` processes to split
the samples topic's partitions between them.
"""

from __future__ import annotations

import tempfile

from monitoring.config import Settings
from monitoring.runtime.bulk import BulkApp
from monitoring.runtime.kafka_client import faust_credentials


def create_app(settings: Settings, app_id: str | None = None) -> BulkApp:
    """A Faust app on the configured broker, raw bytes in and out (Avro is ours); its
    topics can be delivered in bulk (``runtime.bulk``).

    The app id (the consumer group) is ``<topic_prefix>worker`` unless given.
    """
    k = settings.kafka
    app_id = app_id or f"{k.topic_prefix}worker"
    return BulkApp(
        app_id,
        broker=[f"kafka://{host}" for host in k.bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(k),  # kafka.security: SASL/SCRAM, TLS
        key_serializer="raw",
        value_serializer="raw",
        # Per-process scratch dir: several workers may run on one machine. Faust keeps
        # nothing there we rely on: window state lives in our changelog topic.
        datadir=tempfile.mkdtemp(prefix="monitoring-worker-"),
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        producer_max_request_size=k.max_message_bytes,
        consumer_max_fetch_size=k.max_message_bytes,
        producer_acks=-1,
        producer_linger=0.005,
        topic_allow_declare=False,
        # Faust's leader election uses a topic of its own, which we never create (we
        # declare topics ourselves) and nothing here needs: without this the worker
        # logs that topic as missing at start and rebalances once more five minutes
        # later, when the consumer's metadata refresh (metadata_max_age) misses it again
        topic_disable_leader=True,
        topic_partitions=k.samples_partitions,
        stream_wait_empty=False,
        # a killed worker's partitions move on after 10 s, not Faust's default 60 s
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
    )
