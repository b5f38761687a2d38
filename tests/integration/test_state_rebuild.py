"""`monitoring state rebuild` on the real broker, worker and store: the aggregation
agent's changelog checked as a worker restores it; then lost (every key tombstoned)
while the worker is stopped, rebuilt from the samples topic, and the pipeline carries
on to the exact oracle: windows open across the loss hold every sample."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from fixtures.dataset import generate, oracle
from typer.testing import CliRunner

from integration.test_pipeline_e2e import check_against_oracle, produce, recent_start
from monitoring.cli import app as cli
from monitoring.dev.deploy import LocalDeployment
from monitoring.ops.rebuild import (
    RebuildError,
    check_changelog,
    group_members,
    rebuild_from_source,
)
from monitoring.runtime.changelog import read_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def wipe(p: LocalDeployment, topic: str) -> int:
    """Tombstone every key of every partition of ``topic`` (the state is lost)."""
    producer = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    n = 0
    for part in range(p.settings.kafka.samples_partitions):
        for key in read_table(p.settings.kafka.bootstrap_servers, topic, part):
            producer.produce(topic, None, key=key, partition=part)
            n += 1
    assert producer.flush(30) == 0
    return n


def summaries(p: LocalDeployment) -> dict[int, dict[str, int]]:
    reports = check_changelog(p.settings, "aggregation")
    assert all(r.readable for r in reports), reports
    return {r.partition: r.summary for r in reports}


def test_rebuild_from_source_after_the_changelog_is_lost(
    pipeline_factory: Callable[..., LocalDeployment], monkeypatch: pytest.MonkeyPatch
) -> None:
    # no idle closes: the windows open when the worker stops are what the rebuild
    # must bring back
    p = pipeline_factory(aggregation__idle_timeout="10m", anomaly__enabled="false")
    points = generate(n_series=40, ticks=240, start_ms=recent_start(240), seed=3)
    half = len(points) // 2
    expected = oracle(points, p.settings.aggregation.windows_ms)
    since = int(time.time() * 1000) - 1000
    p.start_store()
    p.start("worker", "worker-a")
    produce(p, points[:half])
    p.wait(p.drained, 120, f"the first half processed\n{p.logs()}")
    p.kill("worker-a", signal.SIGTERM)
    p.wait(lambda: group_members(p.settings) == 0, 60, "the worker group empty")

    before = summaries(p)
    assert sum(s["open_windows"] for s in before.values()) > 0
    state_topic = p.topic("aggregation.state")
    assert wipe(p, state_topic) > 0
    assert sum(s["open_windows"] for s in summaries(p).values()) == 0  # lost

    dry = rebuild_from_source(p.settings, "aggregation", since, dry_run=True)
    assert not dry.written and dry.messages > 0
    assert sum(s["open_windows"] for s in summaries(p).values()) == 0  # nothing written
    monkeypatch.setenv("MONITORING_CONFIG", str(p.dir / "settings.yaml"))
    for k, v in p.env.items():
        if k.startswith("MONITORING_"):
            monkeypatch.setenv(k, v)
    out = CliRunner().invoke(
        cli, ["state", "rebuild", "aggregation", "--from-source", "--from", str(since), "--json"]
    )
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["written"] and result["messages"] == dry.messages
    assert result["discarded_outputs"]  # the replay's aggregates were not published again
    assert summaries(p) == before  # the very state the worker had checkpointed
    check = CliRunner().invoke(cli, ["state", "rebuild", "aggregation"])
    assert check.exit_code == 0 and "OK   partition 0" in check.output, check.output

    p.start("worker", "worker-b", aggregation__idle_timeout="6s")
    with pytest.raises(RebuildError, match="has members"):
        p.wait(lambda: group_members(p.settings) > 0, 60, "worker-b in the group")
        rebuild_from_source(p.settings, "aggregation", since)
    produce(p, points[half:])
    check_against_oracle(p, expected)
