"""The reliability suite's pure parts: the fault plan, the dataset, the oracle checks."""

from __future__ import annotations

from collections import Counter

from monitoring.dev.chaos import ROLES, alerts_differing, compare, dataset, oracle, plan


def test_plan_is_seeded_and_kills_every_role_once_a_round() -> None:
    a = plan(7, 3, 20.0, 60.0)
    assert a == plan(7, 3, 20.0, 60.0) and a != plan(8, 3, 20.0, 60.0)
    kills = Counter(e.role for e in a if e.action == "kill")
    assert kills == {role: 3 for role in ROLES}
    for r in range(3):  # one kill of each role inside each round
        inside = [e.role for e in a if e.action == "kill" and r * 20 <= e.at_s < (r + 1) * 20]
        assert sorted(inside) == sorted(ROLES)
    assert [e.down_s for e in a if e.action == "store-outage"] == [60.0]
    assert sum(e.action == "broker-restart" for e in a) == 1
    assert a == sorted(a) and all(0 < e.at_s < 60 for e in a)
    assert plan(7, 0, 20.0, 60.0) == []  # a soak
    assert not any(e.action == "broker-restart" for e in plan(7, 1, 20.0, 5.0, False))


def test_dataset_and_oracle() -> None:
    d = dataset(3, n_series=4, n_hot=2, ticks=60, start_ms=600_000)
    assert len(d.points) == 60 * 6 and d.points == dataset(3, 4, 2, 60, 600_000).points
    for a, b in d.hot.values():  # two whole windows hot at least, then 15 s cold
        assert b - a + 1 >= 25 and b < 60 - 15
    hot_values = [p for p in d.points if p[0] == "chaos_hot" and p[3] == 100.0]
    assert len(hot_values) == sum(b - a + 1 for a, b in d.hot.values())
    exp = oracle(d.points, [10_000, 60_000])
    assert sum(v[0] for (_, w, _), v in exp.items() if w == 10_000) == len(d.points)
    assert len([k for k in exp if k[1] == 60_000]) == 6  # one minute, six series


def test_compare_counts_lost_and_duplicated_samples() -> None:
    exp = oracle([("m", {}, 1000, 1.0), ("m", {}, 2000, 2.0), ("n", {}, 1000, 5.0)], [10_000])
    rows = [[k[0], k[1], k[2], *v] for k, v in exp.items()]
    assert compare(exp, rows) == (0, 0)
    assert compare(exp, rows[:1]) == (1, 0)  # n's window missing: its one sample
    assert compare(exp, [*rows, rows[1]]) == (0, 1)  # a second row for one key
    m = rows[0]
    assert compare(exp, [[*m[:3], 1, 1.0, 1.0, 1.0, 1.0], rows[1]]) == (1, 0)
    assert compare(exp, [[*m[:3], 3, 4.0, 1.0, 2.0, 2.0], rows[1]]) == (0, 1)
    assert compare(exp, [[*m[:3], 2, 9.0, 1.0, 2.0, 2.0], rows[1]]) == (1, 0)  # other values
    assert compare(exp, [*rows, ["x", 10_000, 0, 4, 1.0, 1.0, 1.0, 1.0]]) == (0, 4)


def test_alerts_differing() -> None:
    def body(i: str, status: str) -> dict[str, object]:
        return {"alerts": [{"status": status, "labels": {"alertname": "ChaosHot", "i": i}}]}

    hot = {"0": (1, 2), "1": (3, 4)}
    exact = [body(i, s) for i in hot for s in ("firing", "resolved")]
    assert alerts_differing(hot, exact) == 0
    assert alerts_differing(hot, exact[1:]) == 1  # a firing notification missing
    assert alerts_differing(hot, [*exact, exact[0]]) == 1  # sent twice
    assert alerts_differing(hot, [*exact, body("9", "firing")]) == 1  # not expected
    other = {"alerts": [{"status": "firing", "labels": {"alertname": "Other"}}]}
    assert alerts_differing(hot, [*exact, other]) == 0
