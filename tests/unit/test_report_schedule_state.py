"""The report scheduler's state file as a careless or hostile writer leaves it: a period
end that is not a finite, plausible number of seconds compared as "already reported"
with every period (``NaN < end`` is false), so the reports stopped for good and
silently. It is read as no state now: the due period is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring.reports.schedule import load_state, period_end


@pytest.mark.parametrize(
    "text",
    ['{"last_end_s": NaN}', '{"last_end_s": Infinity}', '{"last_end_s": 1e308}',
     '{"last_end_s": true}', '{"last_end_s": -5}', "[" * 5000, "{" + " " * 10_000 + "}"],
)  # fmt: skip
def test_an_implausible_state_is_no_state(tmp_path: Path, text: str) -> None:
    state = tmp_path / "schedule-state.json"
    state.write_text(text)
    assert load_state(state) == 0.0
    assert load_state(state) < period_end(1_800_000_000, "daily")  # the period is due


def test_a_real_state_is_kept(tmp_path: Path) -> None:
    state = tmp_path / "schedule-state.json"
    state.write_text('{"last_end_s": 1764979200.0, "written": 1}')
    assert load_state(state) == 1764979200.0
