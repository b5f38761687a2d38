"""An agent on the worker's Faust app: bulk delivery, timers, rebalance and shutdown hooks.

``run_on(app, agent, settings, registry)`` is all the wiring an agent needs: its source
topics are consumed in bulk (``runtime.bulk``: Faust's consumer group, fetcher and
commits, one handler call per fetched run), its records go out through
``runtime.outputs.Outputs``, its state is read back with ``runtime.changelog``, and
the ``AgentDriver`` does the rest.

>>> from monitoring.config import Settings
>>> from monitoring.runtime.app import create_app
>>> settings = Settings()
>>> # driver = run_on(create_app(settings), MyAgent(settings), settings, registry)
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from contextlib import suppress
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from faust.types import TP
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.runtime import topics
from monitoring.runtime.agent import S, StreamAgent
from monitoring.runtime.bulk import BulkApp
from monitoring.runtime.changelog import read_table
from monitoring.runtime.driver import AgentDriver
from monitoring.runtime.fence import PartitionFence
from monitoring.runtime.kafka_client import KafkaTarget, client_config
from monitoring.runtime.outputs import Outputs
from monitoring.runtime.topics import IDLE_CHECK, group_name


class BrokerOffsets:
    """High watermarks from the broker, and what lies before them (``drained``), on
    consumers that never join a group. The watermarks are read uncommitted: a read
    committed client is given the last stable offset, which stops before an open
    transaction and so hides it, and the committed records after it, from ``drained``."""

    def __init__(self, kafka: KafkaTarget, timeout_s: float = 2.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        self._client: Consumer | None = None
        self._reader: Consumer | None = None  # committed records only, for ``drained``

    def __call__(self, topic: str, partitions: list[int]) -> dict[int, int] | None:
        if self._client is None:
            self._client = self._consumer("read_uncommitted")  # the high watermark
        try:
            self._client.list_topics(topic, timeout=2.0)  # one probe, not one per partition
            return {
                p: self._client.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=2.0, cached=False
                )[1]
                for p in partitions
            }
        except KafkaException:
            return None

    def drained(self, topic: str, partition: int, offset: int, end: int) -> bool:
        """Whether a reader of committed records at ``offset`` reaches ``end`` without a
        record (``runtime.driver.Drained``): librdkafka skips transaction markers and
        aborted records, and stops at an open transaction (then False)."""
        if self._reader is None:
            self._reader = self._consumer("read_committed", **{"enable.partition.eof": True})
        reader, tp = self._reader, TopicPartition(topic, partition, offset)
        try:
            reader.assign([tp])
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                m = reader.poll(0.1)
                if m is None:
                    continue
                err = m.error()
                if err is None:
                    return False  # a record to read
                if err.code() == KafkaError._PARTITION_EOF:
                    (at,) = reader.position([TopicPartition(topic, partition)])
                    return bool(at.offset >= end)
            return False
        except KafkaException:
            return False
        finally:
            with suppress(KafkaException):
                reader.unassign()

    def _consumer(self, isolation: str, **extra: Any) -> Consumer:
        """A consumer that never subscribes or commits, reading at ``isolation``."""
        return Consumer(
            client_config(
                self.kafka,
                **{
                    "group.id": group_name(self.kafka, IDLE_CHECK),
                    "enable.auto.commit": False,
                    "isolation.level": isolation,
                    **extra,
                },
            )
        )

    def close(self) -> None:
        """Close the consumers (made again if called after)."""
        for c in (self._client, self._reader):
            if c is not None:
                with suppress(KafkaException, RuntimeError):
                    c.close()
        self._client = self._reader = None


def broker_driver(
    agent: StreamAgent[S], settings: Settings, registry: CollectorRegistry
) -> AgentDriver[S]:
    """A driver of ``agent`` on the configured broker (records, state, end offsets); its
    state partitions fenced (``runtime.fence``) unless ``ha.enabled`` is false."""
    k = settings.kafka
    offsets = BrokerOffsets(k)
    fence = None
    if settings.ha.enabled:
        fence = PartitionFence(k, agent.state_topic, worker_owner_id(settings))
    return AgentDriver(
        agent,
        Outputs(k),
        dead_letter_topic=topics.topic_name(k, topics.DEAD_LETTER),
        read_state=lambda topic, p: read_table(k, topic, p),
        end_offsets=offsets,
        registry=registry,
        fence=fence,
        drained=offsets.drained,
    )


_OWNER = uuid.uuid4().hex[:8]  # tells apart two runs of one pid (containers)


def worker_owner_id(settings: Settings) -> str:
    """``x-owner`` of this process's state records: the heartbeat's process id (default
    ``worker@<host>:<pid>``) and a per-run tag."""
    pid = settings.health.process_id or f"worker@{socket.gethostname()}:{os.getpid()}"
    return f"{pid}/{_OWNER}"


def run_on(
    app: BulkApp, agent: StreamAgent[S], settings: Settings, registry: CollectorRegistry
) -> AgentDriver[S]:
    """Register ``agent`` on ``app``; the driver (for health and tests)."""
    driver = broker_driver(agent, settings, registry)
    driver.ack = app.ack
    driver.rejoin = app.request_rejoin
    app.bulk(app.topic(*agent.sources), driver.process)
    app.timer(agent.checkpoint_interval_s)(driver.checkpoint_tick)
    if agent.idle_timeout_s is not None:
        app.timer(min(1.0, agent.idle_timeout_s / 4))(driver.idle_tick)
    sources = set(agent.sources)

    async def on_assigned(sender: Any, assigned: set[TP], **kwargs: Any) -> None:
        await driver.assigned(sorted({tp.partition for tp in assigned if tp.topic in sources}))

    async def on_revoked(sender: Any, revoked: set[TP], **kwargs: Any) -> None:
        await driver.revoked(sorted({tp.partition for tp in revoked if tp.topic in sources}))

    async def on_shutdown(sender: Any, **kwargs: Any) -> None:
        await driver.shutdown()

    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_before_shutdown.connect(on_shutdown)  # type: ignore[arg-type]
    return driver
