"""The PromQL subset against hand-computed values on small window histories."""

from __future__ import annotations

import math

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.history import WindowHistory, WindowRow
from monitoring.alerts.promql import EvalError, compile_expr

S = 1000


def hist(spec: dict[tuple[str, tuple[tuple[str, str], ...]], list[tuple[int, list[float]]]]):
    """{(name, labels): [(end_seconds, values), ...]} -> WindowHistory of 10 s windows."""
    h = WindowHistory(10_000, retention_ms=600_000)
    for (name, labels), windows in spec.items():
        for end_s, values in windows:
            h.add(WindowRow.of(name, dict(labels), end_s * S, values))
    return h


def ev(h: WindowHistory, expr: str, t_s: int):
    """Evaluate; vectors as {label dict as sorted tuple: value}."""
    v = compile_expr(expr).evaluate(h, t_s * S)
    if isinstance(v, float):
        return v
    return {labels: value for labels, value in v}


def L(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


A = ("cpu", L(host="a", env="prod"))
B = ("cpu", L(host="b", env="dev"))
C = ("cpu", L(host="c"))


@pytest.fixture
def cpu() -> WindowHistory:
    return hist(
        {
            A: [(10, [1.0, 3.0]), (20, [5.0]), (30, [7.0, 9.0])],
            B: [(10, [50.0]), (20, [60.0, 40.0])],
            C: [(30, [95.0])],
        }
    )


def cpu_l(**kw: str) -> tuple[tuple[str, str], ...]:
    return L(__name__="cpu", **kw)


# --- instant selectors -----------------------------------------------------------


def test_instant_selector_is_last_of_newest_window(cpu: WindowHistory) -> None:
    assert ev(cpu, "cpu", 30) == {
        cpu_l(host="a", env="prod"): 9.0,
        cpu_l(host="b", env="dev"): 40.0,
        cpu_l(host="c"): 95.0,
    }
    # at 20 s: windows after T are invisible (a replayed history), host c not yet there
    assert ev(cpu, "cpu", 20) == {
        cpu_l(host="a", env="prod"): 5.0,
        cpu_l(host="b", env="dev"): 40.0,
    }
    assert ev(cpu, "cpu", 25) == ev(cpu, "cpu", 20)


def test_staleness_lookback_is_five_minutes(cpu: WindowHistory) -> None:
    # host b's newest window ends at 20 s: visible through T = 319 s, gone at 320 s
    assert cpu_l(host="b", env="dev") in ev(cpu, "cpu", 319)
    assert cpu_l(host="b", env="dev") not in ev(cpu, "cpu", 320)


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ('cpu{env="prod"}', {"a"}),
        ('cpu{env!="prod"}', {"b", "c"}),  # a missing label matches as ""
        ('cpu{env=""}', {"c"}),
        ('cpu{host=~"a|b"}', {"a", "b"}),
        ('cpu{host=~"a.*|c"}', {"a", "c"}),
        ('cpu{host=~"b|"}', {"b"}),
        ('cpu{host!~"a|b"}', {"c"}),
        ('cpu{host=~"."}', {"a", "b", "c"}),
        ('cpu{host=~"an"}', set()),  # anchored: "a" is not matched by "an", nor "an" by "a"
        ('{__name__="cpu", env="dev"}', {"b"}),
        ('{__name__=~"cp.", host="c"}', {"c"}),
        ("nothing", set()),
    ],
)
def test_label_matchers(cpu: WindowHistory, expr: str, hosts: set[str]) -> None:
    got = ev(cpu, expr, 30)
    assert {dict(k)["host"] for k in got} == hosts


# --- range functions -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "t", "expected"),
    [
        # host a windows: 10 s [1, 3], 20 s [5], 30 s [7, 9]
        ('avg_over_time(cpu{host="a"}[20s])', 30, (5 + 16) / 3),  # ends in (10, 30]
        ('avg_over_time(cpu{host="a"}[30s])', 30, (4 + 5 + 16) / 5),
        ('avg_over_time(cpu{host="a"}[10s])', 20, 5.0),
        ('sum_over_time(cpu{host="a"}[30s])', 30, 25.0),
        ('count_over_time(cpu{host="a"}[20s])', 30, 3.0),
        ('min_over_time(cpu{host="a"}[20s])', 30, 5.0),
        ('min_over_time(cpu{host="a"}[30s])', 30, 1.0),
        ('max_over_time(cpu{host="a"}[30s])', 20, 5.0),
        ('max_over_time(cpu{host="a"}[1m])', 30, 9.0),
        ('last_over_time(cpu{host="a"}[1m])', 25, 5.0),
    ],
)
def test_over_time_exact(cpu: WindowHistory, expr: str, t: int, expected: float) -> None:
    got = ev(cpu, expr, t)
    assert list(got.values()) == [pytest.approx(expected, rel=1e-12)]


def test_over_time_drops_name_but_last_over_time_keeps_it(cpu: WindowHistory) -> None:
    assert list(ev(cpu, 'avg_over_time(cpu{host="c"}[1m])', 30)) == [L(host="c")]
    assert list(ev(cpu, 'last_over_time(cpu{host="c"}[1m])', 30)) == [cpu_l(host="c")]


def test_range_excludes_series_without_windows_in_range(cpu: WindowHistory) -> None:
    # host b's last window ends at 20 s: nothing in (20, 30]
    assert set(ev(cpu, "max_over_time(cpu[10s])", 30)) == {L(host="a", env="prod"), L(host="c")}


def test_quantile_over_time() -> None:
    h = hist(
        {
            ("lat", L(i="one")): [(10, [float(v) for v in range(1, 11)])],
            ("lat", L(i="two")): [(10, [0.0]), (20, [10.0])],
        }
    )
    one = 'quantile_over_time({q}, lat{{i="one"}}[10s])'
    # one window of 1..10: p50 = rank floor(.5*9) = 5, p90 = rank 8 = 9, min 1, max 10
    assert ev(h, one.format(q=0.5), 10) == {L(i="one"): 5.0}
    assert ev(h, one.format(q=0.9), 10) == {L(i="one"): 9.0}
    assert ev(h, one.format(q=0), 10) == {L(i="one"): 1.0}
    assert ev(h, one.format(q=1), 10) == {L(i="one"): 10.0}
    # linear between knots (1 at 0, 5 at .5): q=.25 -> 3
    assert ev(h, one.format(q=0.25), 10) == {L(i="one"): 3.0}
    assert ev(h, one.format(q=-1), 10) == {L(i="one"): -math.inf}
    assert ev(h, one.format(q=2), 10) == {L(i="one"): math.inf}
    two = 'quantile_over_time({q}, lat{{i="two"}}[20s])'
    # two single-value windows 0 and 10: CDF steps 0 -> .5 at 0, -> 1 at 10
    assert ev(h, two.format(q=0.5), 20) == {L(i="two"): 0.0}
    assert ev(h, two.format(q=0.6), 20) == {L(i="two"): 10.0}
    # parameter given as a scalar expression
    assert ev(h, 'quantile_over_time(0.1 * 5, lat{i="one"}[10s])', 10) == {L(i="one"): 5.0}


def counter_hist() -> WindowHistory:
    return hist(
        {
            ("req", L(h="x")): [
                (10, [90.0, 100.0]),
                (20, [104.0, 110.0]),
                (30, [2.0, 5.0]),  # reset: min 2 < previous last 110
                (40, [15.0]),
            ],
            # reset inside a window whose last is above the previous last
            ("req", L(h="y")): [(10, [100.0]), (20, [2.0, 150.0])],
            ("req", L(h="z")): [(40, [7.0])],  # one window: no rate
        }
    )


def test_increase_and_rate_with_resets() -> None:
    h = counter_hist()
    # [30s] at 40 s reads windows ending in [10, 40]: +10, reset +5, +10
    assert ev(h, 'increase(req{h="x"}[30s])', 40) == {L(h="x"): 25.0}
    assert ev(h, 'rate(req{h="x"}[30s])', 40) == {L(h="x"): pytest.approx(25 / 30)}
    # [20s] at 40 s: windows ending in [20, 40]: reset +5, +10
    assert ev(h, 'increase(req{h="x"}[20s])', 40) == {L(h="x"): 15.0}
    assert ev(h, 'increase(req{h="x"}[10s])', 20) == {L(h="x"): 10.0}
    assert ev(h, 'increase(req{h="y"}[10s])', 20) == {L(h="y"): 150.0}
    assert ev(h, "rate(req[10s])", 40) == {L(h="x"): 1.0}  # h=z has one window only
    # a young series: rate over the span it covers (10 s), not the 1 m asked
    assert ev(h, 'rate(req{h="y"}[1m])', 20) == {L(h="y"): 15.0}


def test_deriv_and_predict_linear() -> None:
    h = hist(
        {
            ("disk", L(d="lin")): [(10, [1.0]), (20, [3.0]), (30, [5.0])],
            ("disk", L(d="fit")): [(10, [1.0]), (20, [2.0]), (30, [9.0, 6.0])],
        }
    )
    assert ev(h, 'deriv(disk{d="lin"}[30s])', 30) == {L(d="lin"): pytest.approx(0.2)}
    assert ev(h, 'predict_linear(disk{d="lin"}[30s], 60)', 30) == {L(d="lin"): pytest.approx(17.0)}
    # (t-T, last) = (-20, 1), (-10, 2), (0, 6): slope 50/200 = .25, value at T 5.5
    assert ev(h, 'deriv(disk{d="fit"}[30s])', 30) == {L(d="fit"): pytest.approx(0.25)}
    assert ev(h, 'predict_linear(disk{d="fit"}[30s], 10)', 30) == {L(d="fit"): pytest.approx(8.0)}
    # (20 s, 30 s] holds one window: no output
    assert ev(h, "deriv(disk[10s])", 30) == {}


def test_absent(cpu: WindowHistory) -> None:
    assert ev(cpu, "absent(cpu)", 30) == {}
    assert ev(cpu, 'absent(nothing{job="api", env=~"p.*", dc="x", dc="y"})', 30) == {
        L(job="api"): 1.0
    }
    assert ev(cpu, 'absent(cpu{host="zz"})', 30) == {L(host="zz"): 1.0}
    assert ev(cpu, "absent(sum(nothing))", 30) == {(): 1.0}
    # host b: last window at 20 s
    assert ev(cpu, 'absent_over_time(cpu{host="b"}[10s])', 30) == {L(host="b"): 1.0}
    assert ev(cpu, 'absent_over_time(cpu{host="b"}[20s])', 30) == {}


# --- operators --------------------------------------------------------------------------


def test_vector_is_one_unlabelled_element(cpu: WindowHistory) -> None:
    """``vector(1)`` is the Watchdog's expression: it fires at every evaluation."""
    assert ev(cpu, "vector(1)", 30) == {(): 1.0}
    assert ev(cpu, "vector(2) * 3", 30) == {(): 6.0}
    assert ev(cpu, "vector(1) and absent(nothing)", 30) == {(): 1.0}


def test_comparisons_with_scalars(cpu: WindowHistory) -> None:
    assert ev(cpu, "cpu > 40", 30) == {cpu_l(host="c"): 95.0}
    assert ev(cpu, "cpu >= 40", 30) == {cpu_l(host="b", env="dev"): 40.0, cpu_l(host="c"): 95.0}
    assert ev(cpu, "cpu < 40", 30) == {cpu_l(host="a", env="prod"): 9.0}
    assert ev(cpu, "cpu <= 9", 30) == {cpu_l(host="a", env="prod"): 9.0}
    assert ev(cpu, "cpu == 40", 30) == {cpu_l(host="b", env="dev"): 40.0}
    assert ev(cpu, "cpu != 40", 30) == {cpu_l(host="a", env="prod"): 9.0, cpu_l(host="c"): 95.0}
    # scalar on the left: the vector's value is kept
    assert ev(cpu, "50 < cpu", 30) == {cpu_l(host="c"): 95.0}
    assert ev(cpu, "cpu > bool 40", 30) == {
        L(host="a", env="prod"): 0.0,
        L(host="b", env="dev"): 0.0,
        L(host="c"): 1.0,
    }
    assert ev(cpu, "41 > bool cpu", 30) == {
        L(host="a", env="prod"): 1.0,
        L(host="b", env="dev"): 1.0,
        L(host="c"): 0.0,
    }
    assert ev(cpu, "1 > bool 2", 30) == 0.0
    assert ev(cpu, "2 >= bool 2", 30) == 1.0


def test_arithmetic(cpu: WindowHistory) -> None:
    c = 'cpu{host="c"}'
    assert ev(cpu, f"{c} * 2", 30) == {L(host="c"): 190.0}
    assert ev(cpu, f"100 - {c}", 30) == {L(host="c"): 5.0}
    assert ev(cpu, f"{c} / 10", 30) == {L(host="c"): 9.5}
    assert ev(cpu, f"{c} % 10", 30) == {L(host="c"): 5.0}
    assert ev(cpu, f"{c} ^ 2", 30) == {L(host="c"): 9025.0}
    assert ev(cpu, f"-{c}", 30) == {L(host="c"): -95.0}
    assert ev(cpu, f"-{c} + 1", 30) == {L(host="c"): -94.0}
    assert ev(cpu, f"({c} + 5) * 2", 30) == {L(host="c"): 200.0}
    assert ev(cpu, f"{c} + 5 * 2", 30) == {L(host="c"): 105.0}
    assert ev(cpu, f"2 ^ 3 ^ 2 + {c} - {c}", 30) == {L(host="c"): 512.0}  # ^ is right-assoc
    assert ev(cpu, f"{c} / 0", 30) == {L(host="c"): math.inf}
    assert ev(cpu, f"-{c} / 0", 30) == {L(host="c"): -math.inf}
    assert math.isnan(ev(cpu, f"({c} - 95) / 0", 30)[L(host="c")])
    assert math.isnan(ev(cpu, f"{c} % 0", 30)[L(host="c")])
    assert math.isnan(ev(cpu, f"(-{c}) ^ 0.5", 30)[L(host="c")])
    assert ev(cpu, "7 % 4 + 2 * 3 - 1", 30) == 8.0
    assert ev(cpu, "-(2 ^ 2)", 30) == -4.0


def two_metrics() -> WindowHistory:
    return hist(
        {
            ("used", L(host="a", dev="sda")): [(10, [30.0])],
            ("used", L(host="b", dev="sdb")): [(10, [80.0])],
            ("size", L(host="a", dev="sda")): [(10, [100.0])],
            ("size", L(host="b", dev="sdx")): [(10, [100.0])],
            ("limit", L(host="a")): [(10, [25.0])],
            ("limit", L(host="b")): [(10, [90.0])],
        }
    )


def test_vector_vector_one_to_one() -> None:
    h = two_metrics()
    # default matching: every label but the name; host b's dev differs
    assert ev(h, "used / size", 10) == {L(host="a", dev="sda"): 0.3}
    # ignoring(dev): the result drops the ignored labels, as Prometheus
    assert ev(h, "used / ignoring(dev) size", 10) == {L(host="a"): 0.3, L(host="b"): 0.8}
    # on(): the result keeps only the on labels, as Prometheus
    assert ev(h, "used - on(host) limit", 10) == {L(host="a"): 5.0, L(host="b"): -10.0}
    # comparisons filter and keep the left value (and name)
    assert ev(h, "used > on(host) limit", 10) == {L(host="a"): 30.0}
    assert ev(h, "used > ignoring(dev) limit", 10) == {L(__name__="used", host="a"): 30.0}
    assert ev(h, "used > bool ignoring(dev) limit", 10) == {L(host="a"): 1.0, L(host="b"): 0.0}
    assert ev(h, "used == bool used", 10) == {
        L(host="a", dev="sda"): 1.0,
        L(host="b", dev="sdb"): 1.0,
    }


def test_many_to_many_is_an_evaluation_error() -> None:
    h = two_metrics()
    with pytest.raises(EvalError, match="right side has two series"):
        compile_expr("limit + on() used").evaluate(h, 10 * S)
    with pytest.raises(EvalError, match="left side has two series"):
        compile_expr("used + on() sum(limit)").evaluate(h, 10 * S)


def test_set_operators() -> None:
    h = two_metrics()
    assert ev(h, "used and size", 10) == {L(__name__="used", host="a", dev="sda"): 30.0}
    assert ev(h, "used and on(host) limit > 50", 10) == {
        L(__name__="used", host="b", dev="sdb"): 80.0
    }
    assert ev(h, "used unless on(host) limit > 50", 10) == {
        L(__name__="used", host="a", dev="sda"): 30.0
    }
    assert ev(h, "used unless ignoring(dev) limit", 10) == {}
    # size{host="b"} has dev="sdx": a different label set, so it is added too
    assert ev(h, "used > 50 or size", 10) == {
        L(__name__="used", host="b", dev="sdb"): 80.0,
        L(__name__="size", host="a", dev="sda"): 100.0,
        L(__name__="size", host="b", dev="sdx"): 100.0,
    }
    # or with on(host): size{host="b"} is hidden by used{host="b"}, host a's shows
    assert ev(h, "used > 50 or on(host) size", 10) == {
        L(__name__="used", host="b", dev="sdb"): 80.0,
        L(__name__="size", host="a", dev="sda"): 100.0,
    }
    assert ev(h, "limit > 50 or on(host) size", 10) == {
        L(__name__="limit", host="b"): 90.0,
        L(__name__="size", host="a", dev="sda"): 100.0,
    }


def test_aggregations() -> None:
    h = hist(
        {
            ("m", L(job="api", host="a")): [(10, [1.0])],
            ("m", L(job="api", host="b")): [(10, [4.0])],
            ("m", L(job="db", host="c")): [(10, [10.0])],
        }
    )
    assert ev(h, "sum(m)", 10) == {(): 15.0}
    assert ev(h, "sum by (job) (m)", 10) == {L(job="api"): 5.0, L(job="db"): 10.0}
    assert ev(h, "sum(m) by (job)", 10) == {L(job="api"): 5.0, L(job="db"): 10.0}
    assert ev(h, "avg by (job) (m)", 10) == {L(job="api"): 2.5, L(job="db"): 10.0}
    assert ev(h, "min by (job) (m)", 10) == {L(job="api"): 1.0, L(job="db"): 10.0}
    assert ev(h, "max by (job) (m)", 10) == {L(job="api"): 4.0, L(job="db"): 10.0}
    assert ev(h, "count by (job) (m)", 10) == {L(job="api"): 2.0, L(job="db"): 1.0}
    assert ev(h, "sum without (host) (m)", 10) == {L(job="api"): 5.0, L(job="db"): 10.0}
    assert ev(h, "max without () (m)", 10) == {
        L(job="api", host="a"): 1.0,
        L(job="api", host="b"): 4.0,
        L(job="db", host="c"): 10.0,
    }
    assert ev(h, "count by (nolabel) (m)", 10) == {(): 3.0}
    assert ev(h, "sum by (job) (m) > 6", 10) == {L(job="db"): 10.0}
    assert ev(h, 'sum(m{job="none"})', 10) == {}


def test_selector_results_are_shared_and_not_mutated(cpu: WindowHistory) -> None:
    from monitoring.alerts.promql import Context

    ctx = Context(cpu, 30 * S)
    a = compile_expr("cpu > 40").evaluate(cpu, 30 * S, ctx)
    b = compile_expr("cpu * 2").evaluate(cpu, 30 * S, ctx)
    c = compile_expr("cpu").evaluate(cpu, 30 * S, ctx)
    assert len(a) == 1 and len(b) == 3 and len(c) == 3
    assert sorted(v for _, v in c) == [9.0, 40.0, 95.0]


def test_selector_cache_sees_new_and_expired_series(cpu: WindowHistory) -> None:
    from monitoring.alerts.promql import Context

    matches: dict = {}
    expr = compile_expr("cpu > 0")
    assert len(expr.evaluate(cpu, 30 * S, Context(cpu, 30 * S, matches))) == 3
    cpu.add(WindowRow.of("cpu", {"host": "d"}, 40 * S, [1.0]))
    assert len(expr.evaluate(cpu, 40 * S, Context(cpu, 40 * S, matches))) == 4
    cpu.expire(1000 * S)
    assert expr.evaluate(cpu, 1000 * S, Context(cpu, 1000 * S, matches)) == []


_label_st = st.dictionaries(st.sampled_from(["host", "env", "dc"]), st.sampled_from("abc"))


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["cpu", "mem"]), _label_st, st.integers(1, 40)),
        min_size=1,
        max_size=30,
    ),
    st.lists(
        st.tuples(st.sampled_from(["host", "env", "dc"]), st.sampled_from(["=", "!=", "=~"])),
        max_size=3,
    ),
    st.sampled_from(["", "a", "b", "a|c"]),
    st.integers(1, 60),
)
def test_selectors_match_what_brute_force_matches(
    windows: list[tuple[str, dict[str, str], int]],
    matchers: list[tuple[str, str]],
    value: str,
    expire_at_s: int,
) -> None:
    """The history's label index only narrows the candidates: a selector matches the
    same series as testing every series of the metric, before and after expiry."""
    import re

    h = WindowHistory(10_000, retention_ms=60_000, lookback_ms=60_000)
    for name, labels, end_s in windows:
        h.add(WindowRow.of(name, labels, end_s * 10 * S, [1.0]))
    ops = [(k, op, value if op == "=~" else value.split("|")[0]) for k, op in matchers]
    text = "cpu{" + ", ".join(f'{k}{op}"{v}"' for k, op, v in ops) + "}"

    def brute() -> set[str]:
        def ok(labels: dict[str, str]) -> bool:
            for k, op, v in ops:
                got = labels.get(k, "")
                if (op == "=" and got != v) or (op == "!=" and got == v):
                    return False
                if op == "=~" and not re.fullmatch(v, got):
                    return False
            return True

        return {s.key for s in h.series_for("cpu") if ok(s.labels)}

    expr = compile_expr(text)
    for at_s in (500, expire_at_s * 10):
        h.expire(at_s * S)
        t = max([s.ends[-1] for s in h.series_for("cpu")], default=0)
        got = {
            "cpu{" + ",".join(f'{k}="{v}"' for k, v in labels if k != "__name__") + "}"
            for labels, _ in expr.evaluate(h, t)
        }
        assert got == brute(), text
