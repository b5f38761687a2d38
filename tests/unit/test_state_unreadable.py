"""An undecodable state snapshot starts afresh, counted and logged, never raising: a
library upgrade or a format from a future version must not crash-loop a worker.

The stream agents' partitions go through the runtime (``PartitionStates``: a restore
that raises starts the partition empty, ``agent_state_unreadable_total`` counts it);
the aggregation agent is driven through it here, the other agents' restores are shown
to raise rather than return a wrong state. The evaluator and the notifier restore one
state of their own at start: each counts ``bad-state`` and starts empty.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from golden import make, read
from structlog.testing import capture_logs

from monitoring.agents import alerting, notifier
from monitoring.logs.analyzer import CHECKPOINT_KEY, PartitionLogs
from monitoring.mlops.monitor import ModelMonitor
from monitoring.runtime.memory import MemoryRuntime
from monitoring.streams.codec import AvroCodec

CODEC = AvroCodec.from_directory()


def corrupt(value: bytes, how: str) -> bytes:
    """``value`` with garbage in place of its body, or a future version byte first."""
    return b"\x00\xff garbage" if how == "garbage" else bytes([value[0] + 1]) + value[1:]


@pytest.mark.parametrize("how", ["garbage", "future-version"])
async def test_an_aggregation_partition_with_unreadable_state_starts_afresh(how: str) -> None:
    table = dict(read("aggregation", 1))
    key = b'temp{room="r1"}'
    table[key] = corrupt(table[key], how)
    rt: MemoryRuntime[Any] = MemoryRuntime(make.aggregation_agent)
    rt.tables[0] = table
    sample = {"name": "temp", "value": 21.5, "timestamp_ms": make.BASE_MS, "labels": {"room": "r1"}}
    with capture_logs() as logs:
        rt.produce(rt.agent.sources[0], CODEC.encode("monitoring.MetricSample", sample), 0, key)
        await rt.run_until_idle()
    assert rt.metric("agent_state_unreadable_total") == 1
    assert [e["partition"] for e in logs if e["event"] == "state_unreadable_starting_afresh"] == [0]
    state = rt.driver.states.slots[0].state
    assert (state.checkpoint_offset, state.series_count, state.open_windows) == (0, 1, 2)
    assert rt.dead_letters() == []


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


def broken_chunk(table: dict[bytes, bytes]) -> dict[bytes, bytes]:
    first = next(k for k in table if k != alerting.STATE_KEY and k.startswith(b"engine"))
    return {**table, first: b"x" + table[first][1:]}


@pytest.mark.parametrize("how", ["future-version", "broken-chunks", "garbage"])
def test_the_evaluator_starts_empty_on_an_unreadable_state(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = dict(read("alerting", 1))
    if how == "future-version":
        table = {k: v.replace(b'{"v": 1,', b'{"v": 7,') for k, v in table.items()}
    elif how == "broken-chunks":
        table = broken_chunk(table)
    else:
        table = {alerting.STATE_KEY: b"\x00\xff not json"}
    monkeypatch.setattr(alerting, "read_table", lambda *_: table)
    monkeypatch.setattr(alerting, "Consumer", FakeConsumer)
    agent = make.alerting_agent()
    with capture_logs() as logs:
        agent.start()
    bad = agent.metrics.invalid.labels("bad-state")._value.get()
    assert bad == 1
    events = {e["event"] for e in logs}
    assert events & {"state_unreadable", "state_chunks_broken"}
    assert agent.engine.firing() == [] and agent.clock.last_evaluated_ms == 0


@pytest.mark.parametrize("how", ["future-version", "garbage-delivered", "broken-chunks"])
def test_the_notifier_starts_empty_on_an_unreadable_state(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = dict(read("notifier", 1))
    if how == "future-version":
        table[notifier._POSITIONS] = table[notifier._POSITIONS].replace(b'"v": 1', b'"v": 5')
    elif how == "garbage-delivered":
        table[notifier._DELIVERED] = b"\x07\x00"
    else:
        table = {**table, b"am:meta": b"\x00\xffchunked-state-v1\x00" + b"\x00" * 13}
    monkeypatch.setattr(notifier, "read_table", lambda *_: table)
    monkeypatch.setattr(notifier, "Consumer", FakeConsumer)
    agent = make.notifier_agent()
    with capture_logs() as logs:
        agent.start()
    assert agent.invalid.labels("bad-state")._value.get() == (0 if how == "broken-chunks" else 1)
    assert {e["event"] for e in logs} & {"state_unreadable", "state_chunks_broken"}
    assert agent.positions == {agent.alerts_topic: {}, agent.commands_topic: {}}
    assert len(agent.delivered) == 0 and agent.manager.groups() == []
