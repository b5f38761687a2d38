"""Generates the golden state snapshots, each once, from a clean export of the code:

    git archive HEAD monitoring schemas | tar -x -C /tmp/golden-src
    PYTHONPATH=/tmp/golden-src .venv/bin/python tests/golden/make.py [agent ...]

Each agent's state is built from the inputs below through the code's own path (the
domain class fed, then the records its agent's checkpoint writes) and saved as
``<agent>/v<N>.bin``, ``N`` the state version of that code. A file that exists is never
rewritten. The tests replay the same inputs into a fresh state with today's code and
compare it with the restored one, so these inputs must not change either.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

BASE_MS = 1_700_000_040_000 - 1_700_000_040_000 % 60_000  # a minute boundary, in 2023
AGGREGATION_SETTINGS: dict[str, Any] = {
    "windows": [timedelta(seconds=10), timedelta(minutes=1)],
    "allowed_lateness": timedelta(seconds=5),
}


# -- aggregation ----------------------------------------------------------------------
def aggregation_inputs() -> list[tuple[int, list[Any]]]:
    """(offset, samples): three series over 25 s; ``load`` gets 300 values in the
    minute window (a sketch in the state), the others a few (exact values)."""
    from monitoring.metrics.samples import Sample, series_key

    def sample(name: str, labels: dict[str, str], ts: int, v: float) -> Sample:
        return Sample(series_key(name, labels), name, labels, ts, v, "GAUGE", "")

    out: list[tuple[int, list[Any]]] = []
    for k in range(50):
        ts = BASE_MS + k * 500
        batch = [sample("load", {"host": "a"}, ts + j, (k * 6 + j) % 97 / 7) for j in range(6)]
        if k % 5 == 0:
            batch.append(sample("temp", {"room": "r1"}, ts, 20.0 + k / 10))
            batch.append(sample("temp", {"room": "r2"}, ts + 1, -3.5 + k))
        out.append((k, batch))
    return out


def aggregation_agent(**extra: Any) -> Any:
    """The aggregation agent with the golden windows (and ``extra`` settings)."""
    from monitoring.agents.aggregation import AggregationAgent
    from monitoring.config import Settings

    settings = Settings(aggregation={**AGGREGATION_SETTINGS, **extra})
    return AggregationAgent(settings, CollectorRegistry())


def aggregation_state(agent: Any) -> Any:
    """A fresh partition state with the inputs applied (admitted first, as the agent
    does)."""
    state = agent.restore(0, {})
    for offset, samples in aggregation_inputs():
        kept, _ = state.admit(samples)
        state.process(offset, kept)
    return state


def make_aggregation(**extra: Any) -> tuple[int, dict[bytes, bytes]]:
    from monitoring.metrics.checkpoint import VERSION

    agent = aggregation_agent(**extra)
    records = agent.snapshot(aggregation_state(agent))
    return VERSION, {k: v for k, v in records if v is not None}


REFUSING = {"max_series_per_metric": 1}  # temp{room="r2"} refused: refused_count > 0


def make_aggregation_refused() -> tuple[int, dict[bytes, bytes]]:
    """The partition record with ``refused_count`` (written when it is not 0)."""
    return make_aggregation(**REFUSING)


def make_aggregation_refused_published() -> tuple[int, dict[bytes, bytes]]:
    """The partition record with ``refused_count`` and the count published last (the
    counter published once, after the message at offset 24, as the agent does)."""
    from monitoring.metrics.checkpoint import VERSION

    agent = aggregation_agent(**REFUSING)
    state = agent.restore(0, {})
    for offset, samples in aggregation_inputs():
        kept, _ = state.admit(samples)
        state.process(offset, kept)
        if offset == 24:
            state.refused_samples(0, BASE_MS + 12_000, 10_000)
    records = agent.snapshot(state)
    return VERSION, {k: v for k, v in records if v is not None}


def make_aggregation_idle() -> tuple[int, dict[bytes, bytes]]:
    """The partition record with ``idle_event_ms`` (written once a partition has been
    closed idle): the inputs, then an idle close."""
    from monitoring.metrics.checkpoint import VERSION

    agent = aggregation_agent()
    state = aggregation_state(agent)
    state.close_idle()
    records = agent.snapshot(state)
    return VERSION, {k: v for k, v in records if v is not None}


# -- logs -----------------------------------------------------------------------------
def log_inputs() -> list[dict[str, Any]]:
    """LogRecords of two services: a few templates, an error with a traceback."""
    out = []
    for k in range(40):
        svc = "api" if k % 3 else "db"
        rec: dict[str, Any] = {
            "timestamp_ms": BASE_MS + k * 700, "service": svc, "host": f"h{k % 2}",
            "level": "info", "message": f"user {k} logged in from 10.0.0.{k}",
            "logger": "auth", "trace_id": "", "span_id": "", "exception": "",
            "attributes": {},
        }  # fmt: skip
        if k % 7 == 3:
            rec["message"] = f"query took {k * 13} ms on table t{k % 4}"
        if k % 11 == 5:
            rec["level"] = "error"
            rec["message"] = f"connection to db-{k % 3} refused"
            rec["exception"] = 'Traceback (most recent call last):\n  File "x.py", line 1'
        out.append(rec)
    return out


def log_state(logs: Any) -> Any:
    """``logs`` (a ``PartitionLogs`` with 10 s count windows) with the inputs applied."""
    for offset, rec in enumerate(log_inputs()):
        logs.process(offset, rec, rec["timestamp_ms"] + 50)
    return logs


def make_logs() -> tuple[int, dict[bytes, bytes]]:
    from monitoring.logs import analyzer

    records, meta = log_state(analyzer.PartitionLogs(10_000)).checkpoint()
    table = {k.encode(): v for k, v in records if v is not None}
    table[analyzer.CHECKPOINT_KEY.encode()] = meta
    return analyzer.STATE_VERSION, table


# -- model metrics --------------------------------------------------------------------
def model_inputs() -> list[tuple[int, int, Any]]:
    """(topic, offset, event): predictions (topic 0) of a classifier and a regressor
    with two features, labels (topic 1) for most of them; some left pending."""
    from monitoring.mlops.events import Label, Prediction

    out: list[tuple[int, int, Any]] = []
    for k in range(60):
        ts = BASE_MS + k * 1000
        feats = {"x": float(k % 10), "y": (k * 7) % 13 / 3}
        if k % 2:
            p = Prediction(
                f"c{k}", "clf", "1", ts, predicted_class="ab"[k % 3 == 0],
                latency_ms=5.0 + k % 4, features=feats, labels={"region": "eu"},
            )  # fmt: skip
        else:
            p = Prediction(f"r{k}", "reg", "2", ts, predicted_value=k / 4, features=feats)
        out.append((0, k, p))
        if k % 5 != 4:  # every fifth stays pending
            pid = p.prediction_id
            lab = (
                Label(pid, ts + 300, true_class="ab"[k % 4 == 0])
                if k % 2
                else Label(pid, ts + 300, true_value=k / 4 + (k % 3) - 1)
            )
            out.append((1, k, lab))
    return out


def model_state(monitor: Any) -> Any:
    """``monitor`` with the inputs applied."""
    for topic, offset, event in model_inputs():
        if topic == 0:
            monitor.apply_prediction(offset, event)
        else:
            monitor.apply_label(offset, event)
    return monitor


def make_model_metrics() -> tuple[int, dict[bytes, bytes]]:
    from monitoring.mlops.monitor import ModelMonitor

    table = {k: v for k, v in model_state(ModelMonitor()).checkpoint() if v is not None}
    return 1, table


# -- alert evaluator ------------------------------------------------------------------
ALERT_RULES = """
groups:
  - name: golden
    rules:
      - alert: Hot
        expr: temp > 30
        for: 20s
        labels: {severity: page}
        annotations: {summary: "room {{ $labels.room }} at {{ $value }}"}
      - alert: Frozen
        expr: temp < 0
      - alert: Quiet
        expr: absent(temp{room="r9"})
"""


def alert_aggregates(end_ms: int) -> list[Any]:
    """The 10 s windows ending at ``end_ms``: r1 over 30 from the second window on, r2
    below zero in the first two."""
    from monitoring.metrics.aggregator import Aggregate
    from monitoring.metrics.samples import series_key

    k = (end_ms - BASE_MS) // 10_000
    out = []
    for room, v in (("r1", 25.0 + 4 * k), ("r2", -3.0 + k)):
        labels = {"room": room}
        out.append(Aggregate(series_key("temp", labels), "temp", labels, 10_000,
                             end_ms - 10_000, end_ms, 5, 5 * v, v, v, v, v, v, v, v))  # fmt: skip
    return out


def alerting_agent(registry: CollectorRegistry | None = None) -> Any:
    from monitoring.agents.alerting import AlertingAgent
    from monitoring.alerts.rules import load_rules_text
    from monitoring.config import Settings

    settings = Settings(alerting={"watchdog": False, "resend_interval": timedelta(minutes=1)})
    return AlertingAgent(
        settings, registry or CollectorRegistry(), ruleset=load_rules_text(ALERT_RULES)
    )


ALERT_ENDS = [BASE_MS + 10_000 * k for k in range(1, 6)]


def alerting_run(agent: Any, ends: list[int]) -> list[Any]:
    """Windows in and evaluation at each end; the alerts sent."""
    sent = []
    for end in ends:
        for a in alert_aggregates(end):
            agent.engine.add(a)
        sent += agent.engine.evaluate(end)
        agent.clock.last_evaluated_ms = end
    return sent


def make_alerting() -> tuple[int, dict[bytes, bytes]]:
    from monitoring.agents import alerting
    from monitoring.runtime.state_chunks import ChunkedRecords

    agent = alerting_agent()
    alerting_run(agent, ALERT_ENDS)
    state = {
        "v": alerting.STATE_VERSION,
        "engine": agent.engine.to_bytes().decode(),
        "last_evaluated_ms": agent.clock.last_evaluated_ms,
    }
    chunks = ChunkedRecords(max_bytes=400, overhead=0)  # cut in chunks, as a large one is
    records = chunks.expand(alerting.STATE_KEY, json.dumps(state).encode())
    return alerting.STATE_VERSION, {k: v for k, v in records if v is not None}


# -- notifier -------------------------------------------------------------------------
NOTIFIER_CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 2m
  repeat_interval: 10m
receivers: [{name: team}]
"""
DELIVERED = [bytes([k]) * 16 for k in range(3)]


def log_agent() -> Any:
    """The log agent with default settings (10 s count windows)."""
    from monitoring.agents.logs import LogAgent
    from monitoring.config import Settings

    return LogAgent(Settings(), CollectorRegistry())


def model_agent() -> Any:
    """The model metrics agent with default settings."""
    from monitoring.agents.model_metrics import ModelMetricsAgent
    from monitoring.config import Settings

    return ModelMetricsAgent(Settings(), CollectorRegistry())


def notifier_agent(registry: CollectorRegistry | None = None) -> Any:
    from monitoring.agents.notifier import NotifierAgent
    from monitoring.alerts.manager_config import ManagerConfig
    from monitoring.config import Settings

    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"})
    config = ManagerConfig.from_yaml(NOTIFIER_CONFIG)
    return NotifierAgent(settings, registry or CollectorRegistry(), config)


def notifier_alert(name: str, host: str, starts_ms: int) -> Any:
    from monitoring.alerts.model import Alert

    return Alert({"alertname": name, "host": host}, {"summary": f"{name} on {host}"},
                 "firing", starts_ms, value=1.0)  # fmt: skip


def notifier_run(agent: Any) -> list[Any]:
    """Alerts in, a silence, a flush: the notifications due (in flight at the snapshot)."""
    from monitoring.alerts.commands import CreateSilence
    from monitoring.alerts.model import rfc3339
    from monitoring.alerts.silences import SilenceSpec

    m = agent.manager
    spec = SilenceSpec(
        matchers=({"name": "host", "value": "h2", "isRegex": False, "isEqual": True},),
        startsAt=rfc3339(BASE_MS), endsAt=rfc3339(BASE_MS + 3_600_000),
        createdBy="ann", comment="maintenance",
    )  # fmt: skip
    m.apply(CreateSilence(id="s1", silence=spec), BASE_MS)
    for k, host in enumerate(("h1", "h2", "h3")):
        m.receive(notifier_alert("Down", host, BASE_MS + k), BASE_MS + k)
    m.receive(notifier_alert("Slow", "h1", BASE_MS), BASE_MS)
    return m.flush_due(BASE_MS + 30_000)


def make_notifier() -> tuple[int, dict[bytes, bytes]]:
    from monitoring.agents import notifier
    from monitoring.alerts.grouping import notification_to_json

    agent = notifier_agent()
    inflight = notifier_run(agent)
    for key in DELIVERED:
        agent.delivered.add(key)
    positions = {agent.alerts_topic: {"0": 7, "1": 3}, agent.commands_topic: {"0": 1}}
    records = [
        (f"{notifier._AM}{k}".encode(), v) for k, v in agent.manager.checkpoint().items()
    ]  # what NotifierAgent.checkpoint writes, in its order
    records += [
        (notifier._DELIVERED, agent.delivered.to_bytes()),
        (notifier._INFLIGHT, json.dumps([notification_to_json(n) for n in inflight]).encode()),
        (notifier._POSITIONS, json.dumps({"v": notifier.STATE_VERSION, "p": positions}).encode()),
    ]
    return notifier.STATE_VERSION, {k: v for k, v in records if v is not None}


MAKERS = {  # name: (agent, variant of the version's layout, maker)
    "aggregation": ("aggregation", "", make_aggregation),
    "aggregation_refused": ("aggregation", "refused", make_aggregation_refused),  # 3e9719c
    "aggregation_refused_published": (
        "aggregation",
        "refused_published",
        make_aggregation_refused_published,
    ),  # cb6aaa5
    "aggregation_idle": ("aggregation", "idle", make_aggregation_idle),
    "logs": ("logs", "", make_logs),
    "model_metrics": ("model_metrics", "", make_model_metrics),
    # the partition record before it held the counters (code of 6dc76d8^)
    "model_metrics_no_counters": ("model_metrics", "no_counters", make_model_metrics),
    "alerting": ("alerting", "", make_alerting),
    "notifier": ("notifier", "", make_notifier),
}


def main(names: list[str]) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from golden import dump_table, path

    for name in names or list(MAKERS):
        agent, variant, maker = MAKERS[name]
        version, table = maker()
        target = path(agent, version, variant)
        if target.exists():
            print(f"{target}: exists, kept")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(dump_table(table))
        print(f"{target}: {len(table)} records, {target.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
