"""``monitoring bench loop-lag``'s summary line (its numbers are printed, not asserted)."""

from __future__ import annotations

import re

from monitoring.bench.loop_lag import run


def test_summary_line_names_the_restore_and_checkpoint_blocks() -> None:
    line = run(series=3, points=3)
    num = r"\d+\.\d+"
    assert re.fullmatch(
        rf"restore_s={num} restore_block_max_ms={num} restore_block_p99_ms={num} "
        rf"checkpoint_s={num} checkpoint_block_max_ms={num} checkpoint_block_p99_ms={num}",
        line,
    )
