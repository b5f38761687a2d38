"""The reliability suite, short: one round of kill -9 of every process type at seeded
random moments, the run's own broker restarted, the store down for a while, 1 % poison
records; stored aggregates and notifications exactly as without faults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from monitoring.dev.chaos import ROLES, ChaosConfig, ChaosRun

pytestmark = [pytest.mark.integration, pytest.mark.own_broker, pytest.mark.slow]


def test_chaos_short(tmp_path: Path) -> None:
    said: list[str] = []
    cfg = ChaosConfig(
        seed=3, rounds=1, produce_s=30, n_series=10, n_hot=2, store_down_s=8, settle_s=150,
        overrides={"anomaly__enabled": "false"},
    )  # fmt: skip
    result = ChaosRun(cfg, tmp_path, say=said.append).run()
    table = result.table()
    print(f"{table}\n{result.last_line()}")  # the suite's table, in the test's output
    actions = [(e.action, e.role) for e, _ in result.events]
    assert sorted(r for a, r in actions if a == "kill") == sorted(ROLES)
    assert ("broker-restart", "broker") in actions and ("store-outage", "store") in actions
    assert result.poison > 0 and result.samples == 60 * 12  # 60 ticks (1 s of event time) in 30 s
    assert result.converged, f"{table}\n{said}\n{result.stacks}"
    assert (result.lost, result.duplicated, result.alerts_differing) == (0, 0, 0), table
    assert re.fullmatch(
        r"rounds=1 lost=0 duplicated=0 alerts_differing=0 rss_growth_pct=-?\d+\.\d",
        result.last_line(),
    )
