"""The alert evaluator and the worker against the real broker: a restart with a backlog,
and a sample from the future.

* Restart: the evaluator stops (after checkpointing end 11) while 60 more ends of 600
  series over 6 partitions are aggregated; restarted, it re-reads about 8,000 windows
  per partition, more than one ``consume`` of the evaluator's loop takes. Every end
  12..71 is evaluated once, each with every series: no false resolve, ``count`` and
  ``absent`` see them all.
* Future: one sample 59 minutes ahead among on-time ones is dead-lettered; nothing
  else is lost or late, and the evaluator evaluates every real end. (The evaluator's
  own guard against a window from the future: tests/unit/test_alerting_catch_up.py.)
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from fixtures.progress import read_to_end

from monitoring.alerts.alert_series import ALERTS, ALERTS_FOR_STATE
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.dev.deploy import free_port
from monitoring.metrics.collector import MetricsCollector
from monitoring.wire.aggregate_encoding import AggregateDecoder
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

W = 10_000


def rules(tmp_path: Path, n_series: int) -> str:
    path = tmp_path / "rules.yml"
    path.write_text(
        f"""
groups:
  - name: g
    rules:
      - alert: Warm
        expr: temp > 0
      - alert: Missing
        expr: count(temp) < {n_series}
      - alert: Gone
        expr: absent(temp{{room="r{n_series - 1}"}})
"""
    )
    return str(path)


def produce(p: Pipeline, points: list[tuple[str, int, float]]) -> None:
    with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
        for room, ts, v in points:
            mc.record("temp", v, {"room": room}, timestamp_ms=ts)
        assert mc.flush(60) == 0


def windows(start: int, ws: range, n_series: int) -> list[tuple[str, int, float]]:
    """One sample per series and window, window by window."""
    return [(f"r{i}", start + w * W + 1_000, 20.0) for w in ws for i in range(n_series)]


def events(p: Pipeline, name: str, event: str) -> list[dict[str, Any]]:
    path = p.dir / f"{name}.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if f'"{event}"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == event:
                out.append(rec)
    return out


def alerts(p: Pipeline) -> list[tuple[str, str, str]]:
    """Every alert on the alerts topic so far: (alertname, room, status)."""
    codec = AvroCodec.from_directory()
    topic = p.topic("alerts")
    c = Consumer(
        {"bootstrap.servers": p.settings.kafka.bootstrap_servers, "group.id": "x",
         "enable.auto.commit": False}
    )  # fmt: skip
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {q: c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1] for q in parts}
    c.assign([TopicPartition(topic, q, 0) for q in parts if ends[q] > 0])
    out, read = [], dict.fromkeys(parts, 0)
    deadline = time.monotonic() + 60
    while any(read[q] < ends[q] for q in parts) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        read[m.partition()] = m.offset() + 1
        rec = codec.decode(m.value()).record
        out.append((rec["labels"]["alertname"], rec["labels"].get("room", ""), rec["status"]))
    c.close()
    return out


def temp_windows(p: Pipeline) -> int:
    """Windows of ``temp`` on the aggregates topic so far."""
    decoder = AggregateDecoder(AvroCodec.from_directory())
    topic = p.topic("metrics.aggregates")
    msgs = read_to_end(p.settings.kafka.bootstrap_servers, topic)
    return sum(decoder.decode(m.value()).name == "temp" for m in msgs)


def late_own(p: Pipeline) -> list[str]:
    """The names of the late topic's samples (so far), each one the evaluator writes
    (else fails)."""
    codec = AvroCodec.from_directory()
    out = []
    for m in read_to_end(p.settings.kafka.bootstrap_servers, p.topic("metrics.late")):
        rec = codec.decode(m.value()).record
        assert rec["name"] in (ALERTS, ALERTS_FOR_STATE), rec
        out.append(rec["name"])
    return out


def metrics(port: int) -> str:
    """The worker's /metrics ('' while it is not serving yet)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())
    except OSError:
        return ""


def aggregates_closed(port: int) -> float:
    return sum(
        float(line.split()[-1])
        for line in metrics(port).splitlines()
        if line.startswith("aggregation_aggregates_total")
    )


def scrape(port: int, name: str, reason: str | None = None) -> float:
    for line in metrics(port).splitlines():
        if line.startswith(name) and (reason is None or f'reason="{reason}"' in line):
            return float(line.split()[-1])
    return 0.0


def test_a_restart_with_a_backlog_evaluates_every_end_with_every_series(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    n = 600
    p: Pipeline = pipeline_factory(
        alerting__rules=f'["{rules(tmp_path, n)}"]',
        alerting__checkpoint_interval="200ms",
        # live, an end waits at most `grace` for the partitions that have not closed it:
        # 2 s is too short on a loaded machine (the worker closed one partition's windows
        # later and `Missing` fired); this test is about the restart, not the grace
        alerting__grace="15s",
        aggregation__idle_timeout="2s",
        anomaly__enabled="false",
    )
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 15 * 60_000
    end = lambda w: start + (w + 1) * W  # noqa: E731 - the end of window w
    port = free_port()
    p.start("worker", "worker", worker__metrics_port=str(port))
    p.start("alerting", "alerting")
    # two whole minutes first: the idle close of the last one leaves nothing half-closed
    produce(p, windows(start, range(12), n))
    p.wait(lambda: any(e["at_ms"] == end(11) for e in events(p, "alerting", "evaluated")), 120,
           "end 11 evaluated")  # fmt: skip
    p.wait(lambda: len(alerts(p)) >= n, 30, "Warm fires for every series")
    p.kill("alerting", signal.SIGTERM)  # checkpoints end 11 on the way out
    p.procs["alerting"].wait(30)

    produce(p, windows(start, range(12, 72), n))
    want = n * 72 + n * 12  # 10 s windows, and the 1 m windows
    p.wait(lambda: aggregates_closed(port) >= want, 180, "the worker closed the backlog")
    p.start("alerting", "alerting2")
    p.wait(lambda: any(e["at_ms"] == end(71) for e in events(p, "alerting2", "evaluated")), 120,
           "the backlog evaluated")  # fmt: skip

    got = alerts(p)
    assert sorted(got) == sorted(("Warm", f"r{i}", "FIRING") for i in range(n)), [
        a for a in got if a[0] != "Warm" or a[2] != "FIRING"
    ][:20]
    assert [e["at_ms"] for e in events(p, "alerting2", "evaluated")] == [
        end(w) for w in range(12, 72)
    ]
    (started,) = events(p, "alerting2", "alerting_started")
    assert started["last_evaluated_ms"] == end(11)
    assert events(p, "alerting2", "alerting_caught_up")


def test_a_sample_from_the_future_loses_nothing_and_skips_no_end(
    pipeline_factory: Any, tmp_path: Path
) -> None:
    n = 60
    p: Pipeline = pipeline_factory(
        alerting__rules=f'["{rules(tmp_path, n)}"]',
        aggregation__idle_timeout="2s",
        anomaly__enabled="false",
    )
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 10 * 60_000
    end = lambda w: start + (w + 1) * W  # noqa: E731 - the end of window w
    port = free_port()
    p.start("worker", "worker", worker__metrics_port=str(port))
    points = windows(start, range(30), n)
    # in window 15's batch of room r7's partition: 59 minutes ahead of the clock (the old
    # bound was one hour of wall clock)
    points.insert(15 * n + 3, ("r7", now + 59 * 60_000, 1e9))
    produce(p, points)

    want = n * 30 + n * 5  # every 10 s and 1 m window of the on-time samples
    p.wait(lambda: aggregates_closed(port) >= want, 120, "every window closed")
    p.start("alerting", "alerting")  # from the start of the topic, as after a restart
    p.wait(lambda: any(e["at_ms"] == end(29) for e in events(p, "alerting", "evaluated")), 60,
           "the last end evaluated")  # fmt: skip
    assert temp_windows(p) == want  # the evaluator's own series have windows too
    assert scrape(port, 'agent_dead_letters_total{agent="aggregation"', "timestamp-in-future") == 1
    # late: only the evaluator's own samples (ALERTS, with ``alerting.alert_series``),
    # written at ends the worker had closed before the evaluator started
    late_own(p)
    assert [e["at_ms"] for e in events(p, "alerting", "evaluated")] == [end(w) for w in range(30)]
    got = alerts(p)
    assert sorted(got) == sorted(("Warm", f"r{i}", "FIRING") for i in range(n)), got[:20]
