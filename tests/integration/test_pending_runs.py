"""The UI's pending bands (``monitoring.query.alert_state.PENDING_RUNS``) on a real chDB
store: runs of ``ALERTS{alertstate="pending"}`` samples, each ending at its staleness
marker, read as the evaluator writes them (one sample an evaluation)."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitoring.metrics.samples import STALE_NAN, Sample, series_key
from monitoring.query.alert_state import PENDING_RUNS
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

pytestmark = pytest.mark.integration

T0 = 1_800_000_000_000
W = 10_000


def alerts(labels: dict[str, str], state: str, t: int, v: float = 1.0) -> Sample:
    full = {**labels, "alertstate": state}
    return Sample(series_key("ALERTS", full), "ALERTS", full, t, v, "GAUGE")


def runs(client: Any, start: int, end: int) -> list[tuple[dict[str, str], int, int, int, int]]:
    rows = client.query(
        PENDING_RUNS, parameters={"start_ms": start, "end_ms": end, "limit": 100}
    ).result_rows
    got = [(dict(r[0]), int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in rows]
    return sorted(got, key=lambda r: (r[0]["alertname"], r[1]))


def test_pending_runs_end_at_their_staleness_markers(chdb_client: Any) -> None:
    hot = {"alertname": "Hot", "room": "a"}
    cold = {"alertname": "Cold", "room": "b"}
    samples = [
        # Hot: pending 3 evaluations, fires (marker), later pending again and still is
        *(alerts(hot, "pending", T0 + k * W) for k in range(3)),
        alerts(hot, "pending", T0 + 3 * W, STALE_NAN),
        *(alerts(hot, "firing", T0 + k * W) for k in range(3, 6)),
        *(alerts(hot, "pending", T0 + k * W) for k in range(20, 22)),
        # Cold: pending once, then inactive (marker); a firing series is no pending band
        alerts(cold, "pending", T0 + 5 * W),
        alerts(cold, "pending", T0 + 6 * W, STALE_NAN),
        Sample(series_key("temp", hot), "temp", hot, T0, 1.0, "GAUGE"),
    ]
    writer = Writer(chdb_client, StoreMetrics(CollectorRegistry()))
    writer.add_samples(samples)
    writer.add_samples(samples[:4])  # written again (a replay): collapses
    writer.flush()
    pend = {"alertstate": "pending"}
    assert runs(chdb_client, T0 - W, T0 + 30 * W) == [
        ({**cold, **pend}, T0 + 5 * W, T0 + 6 * W, 1, 1),
        ({**hot, **pend}, T0, T0 + 3 * W, 1, 3),
        ({**hot, **pend}, T0 + 20 * W, T0 + 21 * W, 0, 2),
    ]
    # a range starting inside a run clips it; one ending before a run leaves it out
    assert runs(chdb_client, T0 + W, T0 + 4 * W) == [({**hot, **pend}, T0 + W, T0 + 3 * W, 1, 2)]
