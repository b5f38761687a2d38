"""Our ``ALERTS`` and ``ALERTS_FOR_STATE`` series against Prometheus's own: the same rules
and data evaluated by our ``AlertEngine`` and by ``promtool test rules`` (Debian's
Prometheus 2.42: its rule groups write these series, staleness markers included, into
the test's storage). For every evaluation time, the instant queries ``ALERTS``,
``ALERTS{alertstate="pending"}`` and ``ALERTS_FOR_STATE`` must answer in promtool what
our written samples answer under PromQL's lookback and staleness.

Data: at step ``k`` (time ``10 s * k``) Prometheus holds ``temp{room}`` sampled at that
time; our engine holds the window ending then, with that value as its last: both rules
engines see the same instant values.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.history import WindowRow
from monitoring.alerts.rules import load_rules_text
from monitoring.metrics.samples import is_stale

pytestmark = [pytest.mark.integration, pytest.mark.slow]

W = 10_000
LOOKBACK_MS = 5 * 60_000
STEPS = 45
ROOMS = ("a", "b", "c")
RULES = """
groups:
  - name: rooms
    interval: 10s
    rules:
      - alert: HotNow
        expr: temp > 30
        labels: {severity: page}
      - alert: HotFor20s
        expr: temp > 30
        for: 20s
      - alert: HotFor30sKept
        expr: temp > 30
        for: 30s
        keep_firing_for: 20s
      - alert: AnyHot
        expr: max(temp) > 30
        for: 10s
        labels: {team: ops}
"""
Series = tuple[str, tuple[tuple[str, str], ...]]


def scenario(seed: int) -> dict[str, list[float]]:
    """Per room, one value a step: runs of hot (35) and cold (20), cold at step 0."""
    rng = random.Random(seed)
    out = {}
    for room in ROOMS:
        values, hot = [20.0], False
        while len(values) < STEPS:
            hot = not hot if rng.random() < 0.3 else hot
            values.append(35.0 if hot else 20.0)
        out[room] = values
    return out


def ours(values: dict[str, list[float]]) -> dict[Series, list[tuple[int, float]]]:
    """The samples our engine writes, per series, in time order."""
    rs = load_rules_text(RULES, "rooms.yml")
    assert rs.errors == []
    eng = AlertEngine(rs.rules, window_ms=W)
    written: dict[Series, list[tuple[int, float]]] = {}
    for k in range(1, STEPS):
        t = k * W
        for room, vs in values.items():
            eng.add(WindowRow.of("temp", {"room": room}, t, [vs[k]]))
        eng.evaluate(t)
        for s in eng.alert_samples:
            written.setdefault((s.name, tuple(sorted(s.labels.items()))), []).append((t, s.value))
    return written


def instant(written: dict[Series, list[tuple[int, float]]], name: str, t: int, **match: str):
    """An instant query of ``name{match}`` at ``t`` over ``written``: each series' newest
    sample in ``(t - 5m, t]``, none if that is a staleness marker."""
    out = []
    for (n, labels), points in written.items():
        d = dict(labels)
        if n != name or any(d.get(k) != v for k, v in match.items()):
            continue
        last = [(ts, v) for ts, v in points if t - LOOKBACK_MS < ts <= t]
        if last and not is_stale(last[-1][1]):
            inner = ",".join(f'{k}="{v}"' for k, v in labels)
            out.append({"labels": f"{name}{{{inner}}}", "value": last[-1][1]})
    return sorted(out, key=lambda s: s["labels"])


def promtool_test(seed: int) -> dict:
    values = scenario(seed)
    written = ours(values)
    exprs = []
    for k in range(1, STEPS):
        t = k * W
        for expr, name, match in (
            ("ALERTS", "ALERTS", {}),
            ('ALERTS{alertstate="pending"}', "ALERTS", {"alertstate": "pending"}),
            ("ALERTS_FOR_STATE", "ALERTS_FOR_STATE", {}),
        ):
            exprs.append({"expr": expr, "eval_time": f"{t // 1000}s",
                          "exp_samples": instant(written, name, t, **match)})  # fmt: skip
    series = [
        {"series": f'temp{{room="{room}"}}', "values": " ".join(f"{v:g}" for v in vs)}
        for room, vs in values.items()
    ]
    return {"interval": "10s", "name": f"seed {seed}", "input_series": series,
            "promql_expr_test": exprs}  # fmt: skip


def test_alert_series_match_prometheus_rule_evaluation(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make prometheus"
    (tmp_path / "rooms.yml").write_text(RULES)
    tests = [promtool_test(seed) for seed in range(12)]
    firing = sum(
        1 for t in tests for e in t["promql_expr_test"] for s in e["exp_samples"]
        if 'alertstate="firing"' in s["labels"]
    )  # fmt: skip
    pending = sum(
        1 for t in tests for e in t["promql_expr_test"] if e["expr"].endswith('"pending"}')
        for _ in e["exp_samples"]
    )  # fmt: skip
    assert firing > 100 and pending > 50  # the scenarios do exercise both states
    spec = {"rule_files": ["rooms.yml"], "evaluation_interval": "10s", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "SUCCESS" in run.stdout
