"""Report sections over a fleet (a stand-in client answering PromQL as a big store
would): every table is bounded, the worst rows kept. (Against a real chDB store:
tests/integration/test_reports.py.)"""

from __future__ import annotations

from typing import Any

import numpy as np

from monitoring.query.client import Series
from monitoring.reports.sections import MAX_ROWS, Period, Sections

HOSTS = 1500


class Fleet:
    """Answers the resources and SLO sections' queries for HOSTS hosts / services."""

    def query(self, expr: str, at: Any = None) -> list[Series]:
        key = "service" if "http_requests_total" in expr else "host"
        out = []
        for i in range(HOSTS):
            value = 0.9 + i / HOSTS / 20 if key == "service" else float(i % 97)
            if key == "host" and i == 700:
                value = 99.5  # the one that matters
            out.append(Series({key: f"{key}-{i:04d}"}, np.array([0]), np.array([value])))
        return out

    def query_range(self, expr: str, start: Any, end: Any, step: Any) -> list[Series]:
        return []

    def sql(self, statement: str, params: Any = None) -> Any:
        raise AssertionError("no SQL in these sections")


def test_section_tables_are_bounded_keeping_the_worst() -> None:
    sections = Sections(Fleet(), Period(0, 86_400)).all(["resources", "slo"])  # type: ignore[arg-type]
    resources, slo = sections
    for s in sections:
        assert len(s.rows) == MAX_ROWS, (s.key, len(s.rows))
        assert any(f"{HOSTS - MAX_ROWS} more" in n for n in s.notes), s.notes
    assert "host-0700" in [r[0] for r in resources.rows]  # the highest CPU peak
    assert slo.rows[0][0] == "service-0000"  # the lowest availability first
    assert f"{HOSTS} hosts" in resources.summary and f"of {HOSTS} services" in slo.summary
