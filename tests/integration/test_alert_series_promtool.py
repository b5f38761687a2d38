"""Our ``ALERTS`` and ``ALERTS_FOR_STATE`` series against Prometheus's own: the same rules
and data evaluated by our ``AlertEngine`` and by ``promtool test rules`` (Debian's
Prometheus 2.42: its rule groups write these series, staleness markers included, into
the test's storage). For every evaluation time, the instant queries ``ALERTS``,
``ALERTS{alertstate="pending"}`` and ``ALERTS_FOR_STATE`` must answer in promtool what
our written samples answer under PromQL's lookback and staleness.

Data: at step ``k`` (time ``10 s * k``) Prometheus holds ``temp{room}`` sampled at that
time; our engine holds the window ending then, with that value as its last: both rules
engines see the same instant values.

The same rules again in a group with ``limit: 2`` (three rooms), and a recording rule:
a rule with more than two pending and firing instances (series, for the recording
rule) fails its evaluation. ``promtool test rules`` stops a test at its first failed
evaluation, so what is compared there is which rules fail first, when, and why.
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
LIMITED = (
    RULES.replace("    interval: 10s\n", "    interval: 10s\n    limit: 2\n")
    + """
      - record: room:temp:hot
        expr: temp > 30
"""
)
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


def ours(
    values: dict[str, list[float]], rules: str = RULES, failures: list[str] | None = None
) -> dict[Series, list[tuple[int, float]]]:
    """The samples our engine writes, per series, in time order (the evaluations'
    errors appended to ``failures``)."""
    rs = load_rules_text(rules, "rooms.yml")
    assert rs.errors == []
    eng = AlertEngine(rs.rules, window_ms=W)
    written: dict[Series, list[tuple[int, float]]] = {}
    for k in range(1, STEPS):
        t = k * W
        for room, vs in values.items():
            eng.add(WindowRow.of("temp", {"room": room}, t, [vs[k]]))
        eng.evaluate(t)
        if failures is not None:
            failures.extend(e for _, e in eng.errors)
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


def promtool_test(seed: int, rules: str = RULES, failures: list[str] | None = None) -> dict:
    values = scenario(seed)
    written = ours(values, rules, failures)
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


def go_duration(ms: int) -> str:
    """``ms`` as Go prints a duration of whole seconds (``20s``, ``2m0s``)."""
    m, sec = divmod(ms // 1000, 60)
    return f"{m}m{sec}s" if m else f"{sec}s"


def first_failures(values: dict[str, list[float]]) -> list[str]:
    """Our engine over ``LIMITED``: the failed rules of the first evaluation where any
    failed, as ``promtool test rules`` reports them (it stops at that evaluation)."""
    rs = load_rules_text(LIMITED, "rooms.yml")
    assert rs.errors == []
    eng = AlertEngine(rs.rules, recordings=rs.recordings, window_ms=W)
    for k in range(1, STEPS):
        t = k * W
        for room, vs in values.items():
            eng.add(WindowRow.of("temp", {"room": room}, t, [vs[k]]))
        eng.evaluate(t)
        eng.record(t)
        failed = [(r.name, e) for r, e in eng.errors]
        failed += [(r.record, e.removeprefix("EvalError: ")) for r, e in eng.recording_errors]
        if failed:
            return [f"rule: {n}, time: {go_duration(t)}, err: {e}" for n, e in failed]
    return []


def test_a_group_limit_fails_the_rules_prometheus_fails(tmp_path: Path) -> None:
    """``promtool test rules`` stops a test at its first evaluation where a rule failed
    and names every rule that failed then: for each scenario, the same rules fail at the
    same time with the same error in our engine (pending and kept instances count)."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make prometheus"
    (tmp_path / "rooms.yml").write_text(LIMITED)
    tests, want = [], []
    for seed in range(24):
        values = scenario(seed)
        want += first_failures(values)
        series = [
            {"series": f'temp{{room="{room}"}}', "values": " ".join(f"{v:g}" for v in vs)}
            for room, vs in values.items()
        ]
        last = {"expr": "count(temp)", "eval_time": f"{(STEPS - 1) * W // 1000}s",
                "exp_samples": [{"labels": "{}", "value": len(ROOMS)}]}  # fmt: skip
        tests.append({"interval": "10s", "name": f"seed {seed}", "input_series": series,
                      "promql_expr_test": [last]})  # fmt: skip
    kinds = {line.split(",")[0] for line in want}
    assert len(want) > 24 and len(kinds) == 4, want  # every rule fails somewhere
    spec = {"rule_files": ["rooms.yml"], "evaluation_interval": "10s", "tests": tests}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(spec, sort_keys=False))
    run = subprocess.run(
        [promtool, "test", "rules", "test.yml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = run.stdout + run.stderr
    got = [line.strip() for line in out.splitlines() if line.strip().startswith("rule:")]
    assert sorted(got) == sorted(want), out[-4000:]
