"""End to end on the real broker and store: samples -> worker -> evaluator -> ALERTS and
ALERTS_FOR_STATE on the samples topic -> store, read back through the store's
Prometheus API as a user's PromQL would (``ALERTS{alertstate="pending"}``), with the
evaluator SIGKILLed between firing and resolution: the samples it writes again after
its restart collapse in the store, so each is stored once.

Timeline (the instant value at a window's end ``end(w)`` is window ``w``'s last sample):
room a is hot in windows 10 to 19 and the rule has ``for: 20s``, so the alert is
pending at ``end(10)`` and ``end(11)``, firing from ``end(12)`` to ``end(19)`` and gone
at ``end(20)``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.metrics.collector import MetricsCollector

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """
groups:
  - name: rooms
    rules:
      - alert: HighTemp
        expr: temp > 80
        for: 20s
        labels: {severity: page}
"""
HOT = range(10, 20)
W = 10_000


def produce(p: Pipeline, start: int, windows: range) -> None:
    with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
        for w in windows:
            for room in ("a", "b"):
                for i in range(5):
                    v = 90.0 if room == "a" and w in HOT else 50.0
                    mc.record("temp", v, {"room": room}, timestamp_ms=start + w * W + i * 2_000)
        mc.flush(60)


def promql(p: Pipeline, query: str, at_ms: int) -> list[dict[str, Any]]:
    r = httpx.get(
        f"http://127.0.0.1:{p.query_port}/api/v1/query",
        params={"query": query, "time": f"{at_ms / 1000:.3f}"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


def states(p: Pipeline, at_ms: int) -> list[tuple[str, str]]:
    return sorted((s["metric"]["alertstate"], s["value"][1]) for s in promql(p, "ALERTS", at_ms))


def test_alerts_series_reach_the_store_pending_then_firing(
    pipeline_factory, tmp_path: Path
) -> None:
    rules = tmp_path / "rooms.rules.yml"
    rules.write_text(RULES)
    p: Pipeline = pipeline_factory(
        alerting__rules=f'["{rules}"]',
        alerting__checkpoint_interval="200ms",
        alerting__alert_series="true",
    )
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 20 * 60_000
    end = lambda w: start + (w + 1) * W  # noqa: E731 - the end of window w

    p.start_store()
    p.start("worker", "worker")
    p.start("alerting", "alerting")
    produce(p, start, range(0, 16))
    p.wait(lambda: states(p, end(13)) == [("firing", "1")], 180, "ALERTS firing in the store")
    p.kill("alerting")  # SIGKILL: the restarted one replays from its last checkpoint
    p.start("alerting", "alerting2")
    produce(p, start, range(16, 40))
    p.wait(lambda: written(p) >= EXPECTED, 180, "the alert's last samples stored")

    labels = {"__name__": "ALERTS", "alertname": "HighTemp", "room": "a", "severity": "page"}
    pending = promql(p, 'ALERTS{alertstate="pending"}', end(10))
    assert [s["metric"] for s in pending] == [{**labels, "alertstate": "pending"}]
    assert states(p, end(11)) == [("pending", "1")]
    # pending ends where it fires (its staleness marker), firing where it resolves
    for w in range(12, 20):
        assert states(p, end(w)) == [("firing", "1")], w
    assert promql(p, 'ALERTS{alertstate="pending"}', end(12)) == []
    assert states(p, end(9)) == states(p, end(20)) == states(p, end(30)) == []
    for_state = promql(p, "ALERTS_FOR_STATE", end(15))
    assert [(s["metric"]["alertname"], float(s["value"][1])) for s in for_state] == [
        ("HighTemp", end(10) // 1000)
    ]
    assert promql(p, "ALERTS_FOR_STATE", end(20)) == []
    # a range query answers the same, step by step
    r = httpx.get(
        f"http://127.0.0.1:{p.query_port}/api/v1/query_range",
        params={"query": "ALERTS", "start": end(8) / 1000, "end": end(22) / 1000, "step": "10"},
        timeout=30,
    )
    series = {s["metric"]["alertstate"]: [int(float(t) * 1000) for t, _ in s["values"]]
              for s in r.json()["data"]["result"]}  # fmt: skip
    assert series == {
        "pending": [end(10), end(11)],
        "firing": [end(w) for w in range(12, 20)],
    }
    # each written once: the restarted evaluator's repeats collapsed (FINAL)
    assert written(p) == EXPECTED, stored_rows(p)


# ALERTS pending x2 + its marker, firing x8 + its marker; ALERTS_FOR_STATE x10 + marker
EXPECTED = 2 + 1 + 8 + 1 + 10 + 1


def stored_rows(p: Pipeline) -> list[list[Any]]:
    return p.query(
        "SELECT s.name, s.labels['alertstate'], toUnixTimestamp64Milli(x.ts), isNaN(x.value) "
        "FROM samples AS x FINAL INNER JOIN (SELECT series_id, any(name) AS name, "
        "any(labels) AS labels FROM series GROUP BY series_id) AS s "
        "ON s.series_id = x.series_id WHERE s.name IN ('ALERTS', 'ALERTS_FOR_STATE') "
        "ORDER BY x.ts, s.name"
    )


def written(p: Pipeline) -> int:
    rows = stored_rows(p)
    markers = [r for r in rows if int(r[3]) == 1]
    return len(rows) if len(markers) >= 3 else 0
