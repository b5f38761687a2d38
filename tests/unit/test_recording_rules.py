"""Recording rules: loaded from Prometheus-shaped files, evaluated as windows close,
labelled as Prometheus labels them, and written by the alert evaluator to the samples
topic as ordinary MetricSample records (keyed by series, so they partition and
aggregate like any other series)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fixtures.agents import Sent
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import RECORDING_SOURCE, AlertingAgent
from monitoring.alerts.evaluator import AlertEngine, Recorded
from monitoring.alerts.history import WindowRow
from monitoring.alerts.rules import load_rules_text
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.wire.aggregate_encoding import CLOSED_THROUGH, AggregateEncoder
from monitoring.wire.codec import AvroCodec

W = 10_000
CODEC = AvroCodec.from_directory()
ROOMS = {"a": ("x", [50.0, 90.0]), "b": ("x", [20.0, 30.0]), "c": ("y", [10.0])}
RULES = """
groups:
  - name: dc
    labels: {team: ops}
    rules:
      - record: dc:temp:sum
        expr: sum by (dc) (temp)
      - record: room:temp:max1m
        expr: max_over_time(temp[1m])
        labels: {source: rec, team: ""}
      - record: temp:rooms
        expr: count(temp) + 0
      - record: broken
        expr: temp
        labels: {room: ""}
      - record: hot
        expr: temp / 0
      - alert: DcHot
        expr: dc:temp:sum > 100
"""


def engine() -> AlertEngine:
    rs = load_rules_text(RULES, "f.yml")
    assert rs.errors == [] and len(rs.recordings) == 5 and len(rs.rules) == 1
    eng = AlertEngine(rs.rules, recordings=rs.recordings)
    for room, (dc, values) in ROOMS.items():
        eng.add(WindowRow.of("temp", {"room": room, "dc": dc}, W, values))
    return eng


def test_outputs_are_named_and_labelled_as_prometheus_records_them() -> None:
    eng = engine()
    eng.evaluate(W)
    got = sorted(eng.record(W), key=lambda r: (r.name, sorted(r.labels.items())))
    last = {room: values[-1] for room, (_, values) in ROOMS.items()}
    biggest = {room: max(values) for room, (_, values) in ROOMS.items()}
    expected = [
        Recorded("dc:temp:sum", {"dc": "x", "team": "ops"}, last["a"] + last["b"]),
        Recorded("dc:temp:sum", {"dc": "y", "team": "ops"}, last["c"]),
        *(
            Recorded("room:temp:max1m", {"dc": dc, "room": room, "source": "rec"}, biggest[room])
            for room, (dc, _) in sorted(ROOMS.items())
        ),
        Recorded("temp:rooms", {"team": "ops"}, float(len(ROOMS))),
    ]
    assert got == sorted(expected, key=lambda r: (r.name, sorted(r.labels.items())))


def test_a_failing_rule_is_reported_and_the_others_still_record() -> None:
    eng = engine()
    eng.evaluate(W)
    names = {r.name for r in eng.record(W)}
    assert "broken" not in names and "dc:temp:sum" in names
    assert [(r.record, e) for r, e in eng.recording_errors] == [
        (
            "broken",
            "EvalError: vector contains metrics with the same labelset after applying rule labels",
        )
    ]
    assert eng.dropped == len(ROOMS)  # temp / 0: +Inf for every room, not recorded


def test_a_file_of_recording_rules_alone_loads() -> None:
    rs = load_rules_text("groups: [{name: g, rules: [{record: 'a:b', expr: 'sum(x)'}]}]")
    assert rs.errors == [] and rs.rules == [] and rs.recordings[0].record == "a:b"


def test_the_evaluator_writes_recorded_series_to_the_samples_topic(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    a = AlertingAgent(
        Settings(alerting={"rules": [str(rules)], "watchdog": False}),  # type: ignore[arg-type]
        CollectorRegistry(),
    )
    sent = Sent()
    a.outputs = sent  # type: ignore[assignment]
    now = int(time.time() * 1000)
    end = now - now % W - 3 * W
    enc = AggregateEncoder(CODEC)
    aggs = [
        Aggregate(series_key("temp", {"dc": dc, "room": room}), "temp", {"dc": dc, "room": room},
                  W, end - W, end, 1, v[-1], v[-1], v[-1], v[-1], v[-1], v[-1], v[-1], v[-1])
        for room, (dc, v) in ROOMS.items()
    ]  # fmt: skip
    values = enc.encode_all(aggs)
    for i, v in enumerate(values):
        mark = [(CLOSED_THROUGH, str(end).encode())] if i == len(values) - 1 else None
        a.handle(0, v, mark, i)
    asyncio.run(a.evaluate_due(now))

    samples = [(k, CODEC.decode(v).record) for t, k, v in sent.records if t == a.samples_topic]
    by_key = {k.decode(): r for k, r in samples}
    sums = {k: r for k, r in by_key.items() if k.startswith("dc:temp:sum")}
    assert sums.keys() == {
        series_key("dc:temp:sum", {"dc": "x", "team": "ops"}),
        series_key("dc:temp:sum", {"dc": "y", "team": "ops"}),
    }
    x = by_key[series_key("dc:temp:sum", {"dc": "x", "team": "ops"})]
    assert (x["name"], dict(x["labels"]), x["timestamp_ms"], x["value"]) == (
        "dc:temp:sum",
        {"dc": "x", "team": "ops"},
        end,
        ROOMS["a"][1][-1] + ROOMS["b"][1][-1],
    )
    assert x["source"] == RECORDING_SOURCE
    assert len(samples) == 2 + len(ROOMS) + 1  # sums, max1m per room, temp:rooms
    assert a.health()["recording_rules"] == 5
    assert a.health()["recording_rule_errors"][0].startswith("broken: EvalError")


async def test_recorded_series_are_aggregated_and_alertable_like_any_other(
    tmp_path: Path,
) -> None:
    """Worker (in process) -> evaluator -> recorded samples back into the worker -> their
    windows -> an alert rule over the recorded series fires."""
    from monitoring.agents.aggregation import AggregationAgent
    from monitoring.runtime.memory import MemoryRuntime
    from monitoring.wire.aggregate_encoding import AggregateDecoder

    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    settings = Settings(alerting={"rules": [str(rules)], "watchdog": False})  # type: ignore[arg-type]
    evaluator = AlertingAgent(settings, CollectorRegistry())
    sent = Sent()
    evaluator.outputs = sent  # type: ignore[assignment]
    worker: MemoryRuntime[Any] = MemoryRuntime(
        lambda: AggregationAgent(settings, CollectorRegistry(), CODEC)
    )
    samples_topic = evaluator.samples_topic
    aggregates = AggregateDecoder(CODEC)
    now = int(time.time() * 1000)
    base = now - now % 60_000 - 5 * 60_000
    fed = 0

    def temp(ts: int) -> None:
        for room, (dc, values) in ROOMS.items():
            labels = {"room": room, "dc": dc}
            rec = {"name": "temp", "labels": labels, "timestamp_ms": ts, "value": values[-1]}
            key = series_key("temp", labels).encode()
            worker.produce(samples_topic, CODEC.encode("monitoring.MetricSample", rec), 0, key)

    async def evaluate() -> list[tuple[str, str, dict[str, str]]]:
        nonlocal fed
        await worker.run_until_idle()
        out = worker.records(evaluator.source)
        for r in out[fed:]:
            evaluator.handle(0, r.value, r.headers, fed)
            fed += 1
        before = len(sent.records)
        await evaluator.evaluate_due(int(time.time() * 1000))
        alerts = []
        for topic, key, value in sent.records[before:]:
            if topic == samples_topic:  # recorded samples go back to the worker
                worker.produce(samples_topic, value, 0, key)
            else:
                rec = CODEC.decode(value).record
                alerts.append((rec["labels"]["alertname"], rec["status"], dict(rec["labels"])))
        return alerts

    for ts in range(base, base + 20_000, 2_500):  # windows 0 and 1
        temp(ts)
    temp(base + 22_500)  # watermark base + 17.5 s: window 0 closes, window 1 is open
    assert await evaluate() == []  # end 0: dc:temp:sum recorded at base + 10 s
    temp(base + 35_000)  # windows 1 and 2 close, the recorded sample's among them
    await worker.run_until_idle()
    recorded = [
        a
        for r in worker.records(evaluator.source)
        if (a := aggregates.decode(r.value)).name == "dc:temp:sum" and a.window_ms == W
    ]
    x = [a for a in recorded if a.labels["dc"] == "x"]
    assert [(a.window_start_ms, a.count, a.last) for a in x] == [
        (base + 10_000, 1, ROOMS["a"][1][-1] + ROOMS["b"][1][-1])
    ]
    fired = await evaluate()
    assert ("DcHot", "FIRING", {"alertname": "DcHot", "dc": "x", "team": "ops"}) in fired
