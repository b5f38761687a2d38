"""AlertEngine: windows in, alert state changes out; templates; restarts; reloads."""

from __future__ import annotations

import pytest

from monitoring.alerts.evaluator import AlertEngine, Evaluator
from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.rules import load_rules_text
from monitoring.alerts.templating import Template, TemplateError
from monitoring.metrics.aggregator import Aggregate

S = 1000


def rules(text: str):
    rs = load_rules_text(text, "t.yml")
    assert rs.errors == []
    return rs.rules


def feed(eng: AlertEngine, t_s: int, **series: float) -> list:
    """Add one window per `name__host=value` and evaluate at t."""
    for key, v in series.items():
        name, host = key.split("__")
        eng.add(WindowRow.of(name, {"host": host}, t_s * S, [v]))
    return [(a.status, a.labels.get("host"), a.starts_at_ms // S) for a in eng.evaluate(t_s * S)]


def test_real_aggregates_and_other_window_sizes() -> None:
    eng = AlertEngine(rules("rules: [{name: Hot, condition: temp > 30}]"))
    agg = Aggregate(
        'temp{room="a"}',
        "temp",
        {"room": "a"},
        10_000,
        0,
        10_000,
        2,
        70.0,
        35.0,
        35.0,
        35.0,
        35.0,
        35.0,
        35.0,
        35.0,
    )
    minute = Aggregate(
        'temp{room="b"}',
        "temp",
        {"room": "b"},
        60_000,
        0,
        60_000,
        1,
        99.0,
        99.0,
        99.0,
        99.0,
        99.0,
        99.0,
        99.0,
        99.0,
    )
    assert eng.add(agg) and not eng.add(minute)
    (a,) = eng.evaluate(10_000)
    assert dict(a.labels) == {"alertname": "Hot", "room": "a"} and a.value == 35.0


def test_templates_in_labels_and_annotations() -> None:
    eng = AlertEngine(
        rules(
            """
groups:
  - name: g
    rules:
      - alert: Busy
        expr: sum by (host) (req) > 1000
        labels: {severity: page, where: "dc-{{ $labels.host }}"}
        annotations:
          summary: '{{ $labels.host | toUpper }} at {{ $value | humanize }} ({{ $value }})'
          ratio: '{{ .Value | humanizePercentage }} {{ printf "%.2f" .Value }} {{ $labels.nope }}.'
"""
        ),
        generator_url="http://mon:9090/",
    )
    eng.add(WindowRow.of("req", {"host": "a", "path": "/x"}, 10 * S, [1200.0]))
    eng.add(WindowRow.of("req", {"host": "a", "path": "/y"}, 10 * S, [34.5]))
    (a,) = eng.evaluate(10 * S)
    assert dict(a.labels) == {"alertname": "Busy", "host": "a", "severity": "page", "where": "dc-a"}
    assert dict(a.annotations) == {
        "summary": "A at 1.234k (1234.5)",
        "ratio": "1.234e+05% 1234.50 .",
    }  # Go %.4g
    assert a.severity == "page"
    assert (
        a.generator_url
        == "http://mon:9090/graph?g0.expr=sum%20by%20%28host%29%20%28req%29%20%3E%201000"
    )


def test_anomaly_scores_combine_with_thresholds() -> None:
    eng = AlertEngine(
        rules(
            "rules: [{name: Odd, condition: "
            "'anomaly_score{metric=\"cpu\"} > 0.9 and on(host) cpu > 70'}]"
        )
    )
    for host, score, cpu in (("a", 0.95, 75.0), ("b", 0.95, 50.0), ("c", 0.2, 99.0)):
        eng.add(WindowRow.of("anomaly_score", {"metric": "cpu", "host": host}, 10 * S, [score]))
        eng.add(WindowRow.of("cpu", {"host": host}, 10 * S, [cpu]))
    assert [dict(a.labels) for a in eng.evaluate(10 * S)] == [
        {"alertname": "Odd", "host": "a", "metric": "cpu"}
    ]


def test_an_evaluation_error_changes_no_state_and_spares_other_rules() -> None:
    eng = AlertEngine(
        rules(
            """
rules:
  - {name: Dup, condition: '{__name__=~"cpu|mem"} > 0'}
  - {name: Fine, condition: 'cpu > 50'}
"""
        )
    )
    assert feed(eng, 10, cpu__a=60) == [("firing", "a", 10), ("firing", "a", 10)]
    # now mem{host=a} exists too: two series with labels {host=a} once the name goes
    assert feed(eng, 20, cpu__a=60, mem__a=1) == []
    assert [(r.name, e) for r, e in eng.errors] == [
        ("Dup", "EvalError: expr: two series with the labels {'host': 'a'} after dropping the name")
    ]
    assert sorted(a.labels["alertname"] for a in eng.firing()) == ["Dup", "Fine"]


def test_restart_neither_refires_nor_forgets() -> None:
    text = "rules: [{name: Hot, condition: temp > 30, duration: 20s}]"
    eng = AlertEngine(rules(text))
    assert feed(eng, 10, temp__a=40) == []
    assert feed(eng, 20, temp__a=40) == []
    assert feed(eng, 30, temp__a=40) == [("firing", "a", 30)]
    saved = eng.to_bytes()
    # a new process: restores the state, the replayed windows re-evaluate old closes
    eng2 = AlertEngine(rules(text))
    eng2.restore(saved)
    assert feed(eng2, 20, temp__a=40) == []
    assert feed(eng2, 30, temp__a=40) == []
    assert feed(eng2, 40, temp__a=40) == []
    assert feed(eng2, 50, temp__a=10) == [("resolved", "a", 30)]
    # pending state survives too
    eng3 = AlertEngine(rules(text))
    assert feed(eng3, 10, temp__a=40) == []
    eng4 = AlertEngine(rules(text))
    eng4.restore(eng3.to_bytes())
    assert feed(eng4, 20, temp__a=40) == [] and feed(eng4, 30, temp__a=40) == [("firing", "a", 30)]
    with pytest.raises(ValueError, match="version"):
        eng4.restore(b'{"v": 0}')


def test_reload_keeps_state_of_unchanged_rules() -> None:
    eng = AlertEngine(
        rules("rules: [{name: Hot, condition: temp > 30}, {name: Cold, condition: temp < 0}]")
    )
    assert feed(eng, 10, temp__a=40) == [("firing", "a", 10)]
    eng.set_rules(rules("rules: [{name: Hot, condition: temp > 35}]"))
    assert feed(eng, 20, temp__a=40) == []
    assert feed(eng, 30, temp__a=33) == [("resolved", "a", 10)]


def test_history_keeps_the_longest_range_and_expires_idle_series() -> None:
    eng = AlertEngine(rules("rules: [{name: A, condition: 'max_over_time(x[1m]) > 5'}]"))
    h = eng.history
    assert h.retention_ms == 60_000
    for t in range(10, 200, 10):
        eng.add(WindowRow.of("x", {"host": "a"}, t * S, [float(t)]))
    s = h.series_for("x")[0]
    assert [r.end_ms // S for r in s.rows] == [130, 140, 150, 160, 170, 180, 190]
    eng.evaluate(190 * S)
    assert len(h) == 1
    # idle beyond retention (1 m) + lookback (5 m): dropped at the next expiry pass
    eng.evaluate((190 + 360) * S)
    assert len(h) == 1
    eng.evaluate((190 + 361) * S + 60 * S)
    assert len(h) == 0


def test_replayed_and_out_of_order_windows() -> None:
    h = WindowHistory(10_000, 60_000)
    for end, v in ((20, 2.0), (10, 1.0), (30, 3.0), (20, 5.0)):
        h.add(WindowRow.of("x", {}, end * S, [v]))
    assert [(r.end_ms // S, r.last) for r in h.series_for("x")[0].rows] == [
        (10, 1.0),
        (20, 5.0),
        (30, 3.0),
    ]


def test_scalar_rule_and_evaluator_results() -> None:
    rs = rules(
        "rules: [{name: Always, condition: '1 > bool 0'}, {name: Gone, condition: absent(up)}]"
    )
    results = Evaluator(rs, WindowHistory()).evaluate(10 * S)
    assert [(r.rule.name, r.active, r.error) for r in results] == [
        ("Always", {(): 1.0}, None),
        ("Gone", {(): 1.0}, None),
    ]


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ("{{ $value }}", 100.0, "100"),
        ("{{ $value }}", 0.1 + 0.2, "0.30000000000000004"),
        ("{{ $value }}", 2e6, "2e+06"),
        ("{{ $value | humanize }}", 2_500_000.0, "2.5M"),
        ("{{ $value | humanize }}", 0.0025, "2.5m"),
        ("{{ humanize $value }}", 999.0, "999"),
        ("{{ $value | humanizePercentage }}", 0.256, "25.6%"),
        ("{{ $value | humanizeDuration }}", 3725.0, "1h 2m 5s"),
        ("{{ $value | humanizeDuration }}", 90.0, "1m 30s"),
        ('{{ printf "%.1f%%" $value }}', 12.345, "12.3%"),
        ('{{ printf "%d items" $value }}', 12.9, "12 items"),
        ('{{ printf "%s/%s" $labels.host .Labels.dc }}', 0.0, "a/x"),
        ('{{ $labels.host | title }}-{{ toLower "AB" }}', 0.0, "A-ab"),
        ("a  {{- $labels.host -}}  b", 0.0, "aab"),
        ("{{/* note */}}x", 0.0, "x"),
    ],
)
def test_template_subset(template: str, value: float, expected: str) -> None:
    assert Template.compile(template).render({"host": "a", "dc": "x"}, value) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ if $value }}x{{ end }}", "unsupported template function 'if'"),
        ("{{ $value | nope }}", "unsupported template function 'nope'"),
        ("{{ range $labels }}", "unsupported template function 'range'"),
        ("{{ $labels.a-b }}", "bad label name"),
        ("{{ }}", "empty"),
        ("{{ $value", "unbalanced"),
    ],
)
def test_template_rejects(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        Template.compile(template)


def test_template_errors_render_in_place() -> None:
    t = Template.compile("{{ $labels.host | humanize }} / {{ $value | humanize }}")
    assert t.render({"host": "web-1"}, 2000.0) == (
        "<error expanding template: expected a number, got 'web-1'> / 2k"
    )


def test_hysteresis_resolves_when_the_series_goes_away() -> None:
    eng = AlertEngine(
        rules("rules: [{name: Hot, condition: temp > 80, recovery: temp < 70}]"),
        lookback_ms=60_000,
    )
    assert feed(eng, 10, temp__a=90) == [("firing", "a", 10)]
    assert feed(eng, 20, temp__a=75) == []  # held: between the thresholds
    # no more windows: the instant selector sees the 20 s window until 80 s (lookback 1 m)
    assert [a.status for a in eng.evaluate(79 * S)] == []
    assert [(a.status, a.ends_at_ms) for a in eng.evaluate(80 * S)] == [("resolved", 80 * S)]


def test_hysteresis_instances_are_per_series() -> None:
    eng = AlertEngine(rules("rules: [{name: Hot, condition: temp > 80, recovery: temp < 70}]"))
    assert feed(eng, 10, temp__a=90, temp__b=95) == [("firing", "a", 10), ("firing", "b", 10)]
    assert feed(eng, 20, temp__a=75, temp__b=65) == [("resolved", "b", 10)]
    assert sorted(feed(eng, 30, temp__a=69, temp__b=85)) == [
        ("firing", "b", 30),
        ("resolved", "a", 10),
    ]
