"""The evaluator's ``ALERTS`` and ``ALERTS_FOR_STATE`` series, held to Prometheus's rule
evaluation: a hand-worked pending -> firing -> resolved sequence, ``for`` and
``keep_firing_for``, staleness markers, restarts, reloads; then hypothesis against a
port of Prometheus's ``AlertingRule.Eval`` and its group's staleness tracking
(``rules/alerting.go``, ``rules/manager.go`` of 2.43+, which has ``keep_firing_for``)."""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.agents import Sent
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import ALERTS_SOURCE, AlertingAgent
from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.history import WindowRow
from monitoring.alerts.model import Recorded
from monitoring.alerts.rules import load_rules_text
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import is_stale, series_key
from monitoring.wire.aggregate_encoding import CLOSED_THROUGH, AggregateEncoder
from monitoring.wire.codec import AvroCodec

W = 10_000
CODEC = AvroCodec.from_directory()
STALE = "stale"

Seen = set[tuple[str, tuple[tuple[str, str], ...], float | str]]


def seen(samples: list[Recorded]) -> Seen:
    """Samples as a comparable set: (name, sorted labels, value or "stale")."""
    out: Seen = set()
    for s in samples:
        v: float | str = STALE if is_stale(s.value) else s.value
        out.add((s.name, tuple(sorted(s.labels.items())), v))
    return out


def rules(for_: str = "20s", keep: str = "0s", labels: str = "{severity: page}") -> str:
    return f"""
groups:
  - name: g
    rules:
      - alert: Hot
        expr: temp > 30
        for: {for_}
        keep_firing_for: {keep}
        labels: {labels}
"""


def engine(text: str) -> AlertEngine:
    rs = load_rules_text(text, "f.yml")
    assert rs.errors == []
    return AlertEngine(rs.rules, window_ms=W)


def step(eng: AlertEngine, end: int, temps: dict[str, float]) -> Seen:
    for room, v in temps.items():
        eng.add(WindowRow.of("temp", {"room": room}, end, [v]))
    eng.evaluate(end)
    return seen(eng.alert_samples)


HOT = {"alertname": "Hot", "room": "a", "severity": "page"}


def alerts(state: str, labels: dict[str, str] = HOT, value: float | str = 1.0) -> tuple:
    return ("ALERTS", tuple(sorted({**labels, "alertstate": state}.items())), value)


def for_state(active_at_ms: int | str, labels: dict[str, str] = HOT) -> tuple:
    v = active_at_ms if isinstance(active_at_ms, str) else float(active_at_ms // 1000)
    return ("ALERTS_FOR_STATE", tuple(sorted(labels.items())), v)


def test_pending_then_firing_then_resolved() -> None:
    eng = engine(rules(for_="20s"))
    t0 = 1_700_000_000_000  # a multiple of W
    assert step(eng, t0, {"a": 20}) == set()
    got = [step(eng, t0 + k * W, {"a": 35}) for k in (1, 2, 3, 4)]
    active_at = t0 + W
    assert got[0] == got[1] == {alerts("pending"), for_state(active_at)}
    # fires at active_at + 20 s: the pending series ends there with a staleness marker
    assert got[2] == {alerts("firing"), for_state(active_at), alerts("pending", value=STALE)}
    assert got[3] == {alerts("firing"), for_state(active_at)}
    assert step(eng, t0 + 5 * W, {"a": 20}) == {
        alerts("firing", value=STALE),
        for_state(STALE),
    }
    assert step(eng, t0 + 6 * W, {"a": 20}) == set()
    assert for_state(active_at)[2] == 1_700_000_010.0  # whole unix seconds


def test_pending_that_clears_before_for_ends_marks_its_series_stale() -> None:
    eng = engine(rules(for_="1m"))
    assert step(eng, W, {"a": 35}) == {alerts("pending"), for_state(W)}
    assert step(eng, 2 * W, {"a": 10}) == {alerts("pending", value=STALE), for_state(STALE)}


def test_for_zero_fires_at_once_without_a_pending_sample() -> None:
    eng = engine(rules(for_="0s"))
    assert step(eng, W, {"a": 35}) == {alerts("firing"), for_state(W)}


def test_keep_firing_for_stays_firing_then_resolves() -> None:
    eng = engine(rules(for_="0s", keep="20s"))
    step(eng, W, {"a": 35})
    firing = {alerts("firing"), for_state(W)}
    assert step(eng, 2 * W, {"a": 10}) == firing  # keep_since = 2W
    assert step(eng, 3 * W, {"a": 10}) == firing
    assert step(eng, 4 * W, {"a": 10}) == {alerts("firing", value=STALE), for_state(STALE)}


def test_an_output_label_alertstate_is_overridden() -> None:
    eng = engine(rules(for_="0s", labels="{alertstate: mine}"))
    got = step(eng, W, {"a": 35})
    labels = {"alertname": "Hot", "room": "a", "alertstate": "mine"}
    assert got == {alerts("firing", labels), for_state(W, labels)}


def test_a_replayed_end_writes_nothing() -> None:
    eng = engine(rules(for_="0s"))
    step(eng, W, {"a": 35})
    eng.evaluate(W)  # the same end again (a replay after a restart)
    assert eng.alert_samples == []


def test_a_failed_evaluation_writes_nothing_and_marks_nothing_stale() -> None:
    eng = engine("groups: [{name: g, rules: [{alert: Hot, expr: '{__name__=~\"t.*\"} > 30'}]}]")
    labels = {"alertname": "Hot", "room": "a"}
    assert step(eng, W, {"a": 35}) == {alerts("firing", labels), for_state(W, labels)}
    eng.add(WindowRow.of("t2", {"room": "a"}, 2 * W, [35.0]))  # two series, one label set
    assert step(eng, 2 * W, {"a": 35}) == set()
    assert len(eng.errors) == 1
    assert step(eng, 3 * W + 5 * 60_000, {"a": 35}) == {
        alerts("firing", labels),
        for_state(W, labels),
    }


def test_a_restored_engine_marks_the_series_its_predecessor_wrote() -> None:
    eng = engine(rules(for_="20s"))
    step(eng, W, {"a": 35})
    again = engine(rules(for_="20s"))
    again.restore(eng.to_bytes())
    assert step(again, 2 * W, {"a": 10}) == {alerts("pending", value=STALE), for_state(STALE)}


def test_a_rule_removed_on_reload_gets_staleness_markers_at_the_next_evaluation() -> None:
    eng = engine(rules(for_="0s"))
    step(eng, W, {"a": 35})
    other = load_rules_text(
        "groups: [{name: g, rules: [{alert: Cold, expr: 'temp < 0'}]}]", "f.yml"
    )
    eng.set_rules(other.rules)
    assert step(eng, 2 * W, {"a": 35}) == {alerts("firing", value=STALE), for_state(STALE)}
    assert step(eng, 3 * W, {"a": 35}) == set()


def test_a_removed_rule_s_markers_survive_an_evaluation_that_failed() -> None:
    """The evaluator's loop logs an evaluation that raised and goes on to the next end;
    the markers of a rule removed by a reload were taken before, and were lost."""
    eng = engine(rules(for_="0s"))
    step(eng, W, {"a": 35})
    other = load_rules_text(
        "groups: [{name: g, rules: [{alert: Cold, expr: 'temp < 0'}]}]", "f.yml"
    )
    eng.set_rules(other.rules)
    evaluate = eng.evaluator.evaluate

    def broken(at_ms: int) -> Any:
        raise RuntimeError("a bug in a rule's evaluation")

    eng.evaluator.evaluate = broken  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        step(eng, 2 * W, {"a": 35})
    eng.evaluator.evaluate = evaluate  # type: ignore[method-assign]
    assert step(eng, 3 * W, {"a": 35}) == {alerts("firing", value=STALE), for_state(STALE)}


def test_several_instances_and_rules_each_write_their_own_series() -> None:
    eng = engine(
        rules(for_="0s") + "      - alert: Warm\n        expr: temp > 20\n        for: 1m\n"
    )
    got = step(eng, W, {"a": 35, "b": 25})
    b_hot = {"alertname": "Hot", "room": "b", "severity": "page"}
    assert alerts("firing", b_hot) not in got
    warm = [{"alertname": "Warm", "room": r} for r in ("a", "b")]
    assert got == {
        alerts("firing"),
        for_state(W),
        *(alerts("pending", w) for w in warm),
        *(for_state(W, w) for w in warm),
    }


# -- against a port of Prometheus's rule evaluation -------------------------------------


@dataclass
class PromAlert:
    labels: dict[str, str]
    state: str  # pending, firing, inactive
    active_at: int
    resolved_at: int | None = None
    keep_since: int | None = None


class PromRule:
    """``AlertingRule.Eval`` (2.43+) and the group's ``seriesInPreviousEval``, in
    milliseconds; ``resolvedRetention`` is 15 minutes."""

    RETENTION = 15 * 60_000

    def __init__(self, hold: int, keep: int) -> None:
        self.hold, self.keep = hold, keep
        self.active: dict[tuple[tuple[str, str], ...], PromAlert] = {}
        self.previous: set[tuple[str, tuple[tuple[str, str], ...]]] = set()

    def eval(self, ts: int, result: list[dict[str, str]]) -> Seen:
        keys = set()
        for labels in result:
            h = tuple(sorted(labels.items()))
            keys.add(h)
            a = self.active.get(h)
            if a is not None and a.state != "inactive":
                continue
            self.active[h] = PromAlert(labels, "pending", ts)
        vec: list[tuple[str, dict[str, str], float]] = []
        for h, a in list(self.active.items()):
            if h not in keys:
                keep_firing = False
                if a.state == "firing" and self.keep > 0:
                    if a.keep_since is None:
                        a.keep_since = ts
                    if ts - a.keep_since < self.keep:
                        keep_firing = True
                if a.state == "pending" or (
                    a.resolved_at is not None and ts - a.resolved_at > self.RETENTION
                ):
                    del self.active[h]
                if a.state != "inactive" and not keep_firing:
                    a.state = "inactive"
                    a.resolved_at = ts
                if not keep_firing:
                    continue
            else:
                a.keep_since = None
            if a.state == "pending" and ts - a.active_at >= self.hold:
                a.state = "firing"
            vec.append(("ALERTS", {**a.labels, "alertstate": a.state}, 1.0))
            vec.append(("ALERTS_FOR_STATE", dict(a.labels), float(a.active_at // 1000)))
        out: Seen = {(n, tuple(sorted(lb.items())), v) for n, lb, v in vec}
        now = {(n, k) for n, k, _ in out}
        out |= {(n, k, STALE) for n, k in self.previous - now}
        self.previous = now
        return out


ROOMS = ("a", "b", "c")


@settings(max_examples=examples(150), deadline=None)
@given(
    hold=st.sampled_from([0, W, 2 * W, 3 * W]),
    keep=st.sampled_from([0, W, 2 * W]),
    steps=st.lists(
        st.tuples(st.integers(1, 3), st.frozensets(st.sampled_from(ROOMS))),
        min_size=1,
        max_size=25,
    ),
)
def test_the_series_match_prometheus_rule_evaluation(
    hold: int, keep: int, steps: list[tuple[int, frozenset[str]]]
) -> None:
    text = f"""
groups:
  - name: g
    rules:
      - alert: Hot
        expr: temp > 30
        for: {hold // 1000}s
        keep_firing_for: {keep // 1000}s
"""
    eng = engine(text)
    prom = PromRule(hold, keep)
    t = 1_700_000_000_000
    for gap, hot in steps:
        t += gap * W
        temps = {r: 35.0 if r in hot else 20.0 for r in ROOMS}
        ours = step(eng, t, temps)
        theirs = prom.eval(t, [{"alertname": "Hot", "room": r} for r in sorted(hot)])
        assert ours == theirs, (t, hot)


# -- the evaluator writes them to the samples topic ------------------------------------


def agent(tmp_path: Path, registry: CollectorRegistry, **alerting: object) -> AlertingAgent:
    path = tmp_path / "rules.yml"
    path.write_text(rules(for_="10s"))
    a = AlertingAgent(
        Settings(alerting={"rules": [str(path)], "watchdog": False, **alerting}),  # type: ignore[arg-type]
        registry,
    )
    a.outputs = Sent()  # type: ignore[assignment]
    return a


def close(a: AlertingAgent, end: int, temp: float, now: int) -> None:
    labels = {"room": "a"}
    agg = Aggregate(series_key("temp", labels), "temp", labels, W, end - W, end,
                    1, temp, temp, temp, temp, temp, temp, temp, temp)  # fmt: skip
    a.handle(0, AggregateEncoder(CODEC).encode_all([agg])[0], [(CLOSED_THROUGH, str(end).encode())])
    asyncio.run(a.evaluate_due(now))


def test_the_evaluator_writes_alert_series_and_markers_to_the_samples_topic(
    tmp_path: Path,
) -> None:
    registry = CollectorRegistry()
    a = agent(tmp_path, registry, alert_series=True)
    now = int(time.time() * 1000)
    end = now - now % W - 5 * W
    for k, temp in enumerate((35.0, 35.0, 20.0)):
        close(a, end + k * W, temp, now)
    sent = a.outputs.records  # type: ignore[attr-defined]
    got = [(k.decode(), CODEC.decode(v).record) for t, k, v in sent if t == a.samples_topic]
    rows = [
        (r["name"], r["labels"].get("alertstate"), r["timestamp_ms"] - end,
         STALE if is_stale(r["value"]) else r["value"])
        for _, r in got
    ]  # fmt: skip
    active = float(end // 1000)
    assert rows == [
        ("ALERTS", "pending", 0, 1.0),
        ("ALERTS_FOR_STATE", None, 0, active),
        ("ALERTS", "firing", W, 1.0),
        ("ALERTS_FOR_STATE", None, W, active),
        ("ALERTS", "pending", W, STALE),
        ("ALERTS", "firing", 2 * W, STALE),
        ("ALERTS_FOR_STATE", None, 2 * W, STALE),
    ]
    key, first = got[0]
    assert key == series_key("ALERTS", {**HOT, "alertstate": "pending"})
    assert first["source"] == ALERTS_SOURCE and first["kind"] == "GAUGE"
    assert math.isnan(got[-1][1]["value"])
    assert registry.get_sample_value("alerting_alert_series_samples_total") == 7


def test_alert_series_can_be_switched_off(tmp_path: Path) -> None:
    a = agent(tmp_path, CollectorRegistry(), alert_series=False)
    now = int(time.time() * 1000)
    close(a, now - now % W - 2 * W, 35.0, now)
    sent = a.outputs.records  # type: ignore[attr-defined]
    assert [t for t, _, _ in sent if t == a.samples_topic] == []
    assert any(t == a.alerts_topic for t, _, _ in sent) is False  # pending: no alert yet
