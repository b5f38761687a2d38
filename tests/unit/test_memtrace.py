"""The opt-in memory tracing of a process (``monitoring.dev.memtrace``)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

from monitoring.dev.memtrace import ENV, mallinfo, start_from_env


def test_nothing_is_traced_without_the_variable() -> None:
    assert start_from_env("worker", {}) is None
    assert start_from_env("worker", {ENV: ""}) is None


def test_a_report_names_the_lines_that_grew(tmp_path: Path) -> None:
    env = {ENV: str(tmp_path / "trace_{role}_{pid}.txt"), f"{ENV}_EVERY_S": "3600"}
    trace = start_from_env("worker", env)
    assert trace is not None
    try:
        held = [bytearray(4096) for _ in range(256)]  # 1 MiB allocated on this line
        report = trace.dump()
    finally:
        trace.stop.set()
        tracemalloc.stop()
    assert trace.path.name.startswith("trace_worker_") and len(held) == 256
    lines = report.splitlines()
    assert lines[0].startswith("== t=") and " rss=" in lines[0] and " traced=" in lines[0]
    assert any(__file__ in line and line.split()[0].startswith("+1.0") for line in lines)
    if mallinfo() is not None:  # glibc
        assert lines[1].startswith("mallinfo heap=")
