"""CPU per scraped series on the scraper's push thread: first sight against known.

``python -m monitoring.bench.scrape_first_sight``: pages of 1,000 node_exporter-like
series (10 gauge families of 100, two labels each) through ``parse_lazy`` and
``prepare`` with the SDK's real ``make_series`` (no broker), process CPU time, best of 5
rounds of 30 pages; a fresh target cache per page for first sight, one warm cache for
known series. Numbers only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from monitoring.ingest.exposition import parse_lazy
from monitoring.ingest.scrape import _TargetLoop, prepare
from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.ingest.targets import JobTargets
from monitoring.sdk.producer import SeriesHandle, make_series

PAGES = 30
ROUNDS = 5


def page() -> str:
    """Ten gauge families of 100 series with two labels each."""
    return "".join(
        f"# HELP m{j} Help.\n# TYPE m{j} gauge\n"
        + "".join(f'm{j}{{path="/api/v{i}",method="GET"}} {i}.5\n' for i in range(100))
        for j in range(10)
    )


def measure() -> tuple[float, float]:
    """(first sight, known) in µs of CPU per series."""
    body = page()
    jobs = ScrapeFile.parse(
        {"scrape_configs": [{"job_name": "j", "static_configs": [{"targets": ["t:1"]}]}]}
    ).jobs()
    jt = JobTargets(jobs[0], Path("."), 1 << 20, 100)
    (target,) = jt.targets()

    def series(name: str, labels: Any, kind: str) -> SeriesHandle:
        return SeriesHandle(make_series(name, labels, kind, ""), lambda *_: True)

    def fresh() -> _TargetLoop:
        tl = _TargetLoop(jobs[0], jt, target)
        tl.cache_cap, tl.cache_bytes_cap = 10**6, 1 << 30
        return tl

    def pages(tl: Any) -> float:
        c0 = time.process_time()
        for _ in range(PAGES):
            now = time.time_ns() // 1_000_000
            prepare(parse_lazy(body, "text/plain"), tl() if callable(tl) else tl, series, now)
        return (time.process_time() - c0) / (PAGES * 1000) * 1e6

    first = known = float("inf")
    for _ in range(ROUNDS):
        first = min(first, pages(fresh))
        warm = fresh()
        prepare(parse_lazy(body, "text/plain"), warm, series, time.time_ns() // 1_000_000)
        known = min(known, pages(warm))
    return first, known


if __name__ == "__main__":
    f, k = measure()
    print(f"first sight {f:.1f} us CPU/series, known {k:.1f} us CPU/series "
          f"(best of {ROUNDS} x {PAGES} pages of 1000)")  # fmt: skip
