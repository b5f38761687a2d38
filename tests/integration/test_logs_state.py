"""The log agent's state through the real broker (hardening finding 6).

100,000 distinct templates pushed through one service (in process), checkpointed by
the agent's own timer callback into the compacted ``logs.state`` topic: every record
ever written is under the message limit, a state record the producer refuses is
counted and written at the next tick (the worker does not stop), and a new agent
restores the same bounded state (the newest ``max_templates`` templates, exact
counters) from the topic.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from fixtures.kafka import SettingsFactory
from prometheus_client import CollectorRegistry

from monitoring.agents.logs import LogAgent, LogState
from monitoring.config import Settings
from monitoring.logs.corpus import distinct_messages
from monitoring.runtime.driver import AgentDriver
from monitoring.runtime.faust_app import broker_driver
from monitoring.runtime.fence import PartitionFence
from monitoring.runtime.shadow import OVERHEAD
from monitoring.runtime.topics import LOG_STATE, topic_name

pytestmark = [pytest.mark.integration]

N = 100_000
T0 = 1_700_000_000_000


def agent_for(settings: Settings) -> tuple[LogAgent, AgentDriver[LogState], CollectorRegistry]:
    registry = CollectorRegistry()
    agent = LogAgent(settings, registry)
    driver = broker_driver(agent, settings, registry)
    driver.states.max_duty = 1.0  # no checkpoint skipped for being too soon
    return agent, driver, registry


def state_records(settings: Settings, partition: int) -> list[tuple[bytes, bytes | None]]:
    """Every record of the state topic's partition, tombstones and superseded included."""
    topic = topic_name(settings.kafka, LOG_STATE)
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                  "group.id": f"{topic}-check", "enable.partition.eof": True,
                  "enable.auto.commit": False})  # fmt: skip
    c.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
    out: list[tuple[bytes, bytes | None]] = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                raise KafkaException(m.error())
            out.append((m.key(), m.value()))
        raise TimeoutError(f"{topic}[{partition}]: no end after {len(out)} records")
    finally:
        c.close()


async def test_100k_templates_checkpoint_and_restore_through_the_broker(
    settings_factory: SettingsFactory,
) -> None:
    settings = settings_factory()
    limit = settings.kafka.max_message_bytes
    bound = settings.logs.max_templates
    agent, driver, registry = agent_for(settings)
    slot = await driver.slot(0)
    logs = slot.state.logs
    messages = distinct_messages(N, seed=11)

    refused = 0
    fence = driver.states.fence  # the state goes through partition 0's fenced producer
    assert isinstance(fence, PartitionFence)
    writer = fence._writers[0]

    class RefuseOnce:
        """The partition's producer, refusing the first state record."""

        def __init__(self, producer: Any) -> None:
            self.producer = producer

        def __getattr__(self, name: str) -> Any:
            return getattr(self.producer, name)

        def produce(self, topic: str, *args: Any, **kw: Any) -> None:
            nonlocal refused
            if topic == agent.state_topic and refused == 0:
                refused += 1
                raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "refused in test"))
            self.producer.produce(topic, *args, **kw)

    writer.producer = RefuseOnce(writer.producer)
    for i, msg in enumerate(messages):
        rec = {"timestamp_ms": T0 + i * 10, "service": "api", "level": "info", "message": msg}
        assert logs.process(i, rec, T0 + i * 10) is not None
        driver.states.processed(slot, i)
        if (i + 1) % 25_000 == 0:
            await driver.checkpoint_tick()  # the first one refused: kept, tried again
    assert refused == 1
    failures = registry.get_sample_value("agent_checkpoint_failures_total", {"agent": "logs"})
    assert failures == 1.0
    await driver.checkpoint_tick()  # the last generation's predecessors tombstoned
    assert not slot.unwritten and not slot.pending
    svc = logs.services["api"]
    assert logs.evictions == N - bound

    records = state_records(settings, 0)
    largest = max(len(k) + len(v or b"") for k, v in records)
    assert largest <= agent.state_chunk_bytes + 1024 < limit
    logical = registry.get_sample_value("logs_state_largest_record_bytes") or 0
    assert logical <= largest <= logical + OVERHEAD  # the runtime's header and slot suffix

    started = time.perf_counter()
    _, second, _ = agent_for(settings)
    restored = (await second.slot(0)).state.logs
    restore_s = time.perf_counter() - started
    print(f"\n{len(records)} state records written, largest {largest} bytes; "
          f"restore {restore_s:.3f} s")  # fmt: skip
    assert restored.restore_errors == []
    assert restored.checkpoint_offset == N - 1
    r_svc = restored.services["api"]
    newest = list(range(N - bound + 1, N + 1))
    assert list(r_svc.templates.miner.drain.id_to_cluster) == newest
    assert {i: r_svc.templates.template(i) for i in newest} == {
        i: svc.templates.template(i) for i in newest
    }
    assert r_svc.counts.levels == {"INFO": N}
    assert r_svc.counts.state() == svc.counts.state()
    assert r_svc.first_seen == svc.first_seen
