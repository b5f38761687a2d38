"""An undecodable state snapshot starts afresh, counted and logged, never raising: a
library upgrade or a format from a future version must not crash-loop a worker.

Every stream agent (aggregation, logs, model metrics) is driven on the in-memory
runtime over a spoilt golden table: the partition starts empty
(``agent_state_unreadable_total``, ``state_unreadable_starting_afresh``) and its
message is applied. The logs and model monitor restores are also shown to raise on
other spoilt tables rather than return a wrong state. The evaluator and the notifier
restore one state of their own at start: each counts ``bad-state`` and starts empty.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from golden import make, read
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitoring.agents import alerting, notifier
from monitoring.logs.analyzer import CHECKPOINT_KEY, PartitionLogs
from monitoring.mlops.monitor import ModelMonitor
from monitoring.runtime import consume
from monitoring.runtime.memory import MemoryRuntime
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()


def corrupt(value: bytes, how: str) -> bytes:
    """``value`` replaced by garbage, or from a future version: its JSON ``"v"`` or its
    leading version (or kind) byte raised."""
    if how == "garbage":
        return b"\x00\xff garbage"
    if value.startswith(b"{"):
        return re.sub(rb'"v": \d+', b'"v": 99', value, count=1)
    return bytes([value[0] + 1]) + value[1:]


def stream_agents() -> dict[str, tuple[Callable[[], Any], str, Any, bytes]]:
    """name: (agent factory, golden table, a key to spoil, a first message)."""
    from monitoring.agents.logs import LogAgent
    from monitoring.agents.model_metrics import ModelMetricsAgent
    from monitoring.config import Settings

    settings = Settings()
    log = {"timestamp_ms": make.BASE_MS, "service": "api", "message": "user 5 logged in"}
    prediction = {"prediction_id": "c99", "model": "clf", "version": "1",
                  "timestamp_ms": make.BASE_MS, "predicted_class": "a"}  # fmt: skip
    return {
        "aggregation": (
            make.aggregation_agent, "aggregation", b'temp{room="r1"}',
            CODEC.encode("monitoring.MetricSample", {"name": "temp", "value": 21.5,
                         "timestamp_ms": make.BASE_MS, "labels": {"room": "r1"}}),
        ),
        "logs": (
            lambda: LogAgent(settings, CollectorRegistry(), CODEC), "logs",
            CHECKPOINT_KEY.encode(), CODEC.encode("monitoring.LogRecord", log),
        ),
        "model_metrics": (
            lambda: ModelMetricsAgent(settings, CollectorRegistry(), CODEC), "model_metrics",
            b"\0meta", CODEC.encode("monitoring.Prediction", prediction),
        ),
    }  # fmt: skip


@pytest.mark.parametrize("how", ["garbage", "future-version"])
@pytest.mark.parametrize("name", ["aggregation", "logs", "model_metrics"])
async def test_a_stream_partition_with_unreadable_state_starts_afresh(name: str, how: str) -> None:
    factory, golden, key, message = stream_agents()[name]
    table = dict(read(golden, 2 if golden == "logs" else 1))
    table[key] = corrupt(table[key], how)
    rt: MemoryRuntime[Any] = MemoryRuntime(factory)
    rt.tables[0] = table
    with capture_logs() as logs:
        rt.produce(rt.agent.sources[0], message, 0, b"k")
        await rt.run_until_idle()
    assert rt.metric("agent_state_unreadable_total") == 1
    assert [e["partition"] for e in logs if e["event"] == "state_unreadable_starting_afresh"] == [0]
    assert rt.dead_letters() == []  # the message applied to the fresh state
    assert rt.metric("agent_messages_total") == 1


@pytest.mark.parametrize("version", [1, 2])
def test_an_unreadable_logs_state_raises_for_the_runtime_to_start_afresh(version: int) -> None:
    table = dict(read("logs", version))
    meta = table.pop(CHECKPOINT_KEY.encode())
    future = meta.replace(f'"v": {version}'.encode(), b'"v": 99')
    with pytest.raises(ValueError, match="version 99"):
        PartitionLogs(10_000).restore(future, ((k.decode(), v) for k, v in table.items()))
    with pytest.raises(ValueError):
        PartitionLogs(10_000).restore(b"\x00\xff", ())


@pytest.mark.parametrize("how", ["garbage", "unknown-kind", "truncated-pickle", "unknown-key"])
def test_an_unreadable_model_monitor_state_raises_for_the_runtime_to_start_afresh(
    how: str,
) -> None:
    table = dict(read("model_metrics", 1))
    series = next(k for k in table if k.startswith(b"m\0"))
    if how == "garbage":
        table[series] = b"\x02\x80\x05garbage"
    elif how == "unknown-kind":
        table[series] = b"\x09" + table[series][1:]
    elif how == "truncated-pickle":
        table[series] = table[series][: len(table[series]) // 2]
    else:
        table[b"z\0new"] = b"\x01{}"
    with pytest.raises(Exception):  # noqa: B017 (whatever pickle raises: the runtime takes any)
        ModelMonitor().restore(table)


class FakeConsumer:
    """The few consumer calls of a start: one partition per topic, empty."""

    def __init__(self, *_: Any) -> None:
        self.assigned: list[TopicPartition] = []

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        return SimpleNamespace(topics={topic: SimpleNamespace(partitions={0: None})})

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float = 0) -> Any:
        return [TopicPartition(tp.topic, tp.partition, -1) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, **_: Any) -> tuple[int, int]:
        return (0, 0)

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)


def corrupted(name: str, how: str) -> dict[bytes, bytes]:
    """The golden state of the evaluator or the notifier, spoilt ``how``."""
    table = dict(read(name, 1))
    if how == "garbage":
        key = alerting.STATE_KEY if name == "alerting" else notifier._POSITIONS
        return {**table, key: b"\x00\xff not json"}
    if how == "future-version":
        return {k: v.replace(b'"v": 1', b'"v": 7') for k, v in table.items()}
    if how == "broken-chunks":  # a chunk's bytes changed, or a manifest without chunks
        if name == "alerting":
            first = next(k for k in table if k != alerting.STATE_KEY)
            return {**table, first: b"x" + table[first][1:]}
        return {**table, b"am:meta": b"\x00\xffchunked-state-v1\x00" + b"\x00" * 13}
    assert how == "garbage-delivered"
    return {**table, notifier._DELIVERED: b"\x07\x00"}


def start(name: str, how: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, float, set[str]]:
    """The agent started over a spoilt state: it, its ``bad-state`` count, the events
    it logged."""
    module = {"alerting": alerting, "notifier": notifier}[name]
    table = corrupted(name, how)
    monkeypatch.setattr(module, "read_table", lambda *_: table)
    monkeypatch.setattr(consume, "Consumer", FakeConsumer)
    registry = CollectorRegistry()
    agent = (make.alerting_agent if name == "alerting" else make.notifier_agent)(registry)
    with capture_logs() as logs:
        agent.start()
    bad = registry.get_sample_value(f"{name}_invalid_messages_total", {"reason": "bad-state"})
    return agent, bad or 0.0, {e["event"] for e in logs}


@pytest.mark.parametrize(
    ("name", "how"),
    [
        (n, h)
        for n in ("alerting", "notifier")
        for h in ("garbage", "future-version", "broken-chunks")
    ]
    + [("notifier", "garbage-delivered")],
)
def test_the_evaluator_and_the_notifier_start_empty_on_an_unreadable_state(
    name: str, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent, bad, events = start(name, how, monkeypatch)
    assert bad == 1
    assert events & {"state_unreadable", "state_chunks_broken"}
    if name == "alerting":
        assert agent.engine.firing() == [] and agent.clock.last_evaluated_ms == 0
    else:
        assert agent.positions == {agent.alerts_topic: {}, agent.commands_topic: {}}
        assert len(agent.delivered) == 0 and agent.manager.groups() == []
