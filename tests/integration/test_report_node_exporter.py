"""The report's resources section on a store fed by the system collector (node_exporter's
series names) instead of the SDK's. Its own module: chDB opens one directory per process,
and the other report tests hold theirs for the module. No Kafka broker."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.metrics.samples import Sample
from monitoring.query.client import local_store
from monitoring.reports.sections import Period, Sections
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

pytestmark = pytest.mark.no_broker
HOUR = 3_600_000
NOW_MS = int(time.time() * 1000) // HOUR * HOUR


def test_resources_from_node_exporter_series(tmp_path: Path) -> None:
    base = Settings.load(None)
    settings = base.model_copy(
        update={"storage": base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'db'}"})}
    )
    client = connect(settings.storage.dsn)
    migrate(client, settings.storage)
    writer = Writer(client, StoreMetrics(CollectorRegistry()))
    t = NOW_MS - HOUR + 15_000 * np.arange(241)
    for inst, busy in (("a:9100", 0.25), ("b:9100", 0.75)):
        for mode, share in (("idle", 1 - busy), ("user", busy)):
            labels = {"instance": inst, "cpu": "0", "mode": mode}
            key = f'node_cpu_seconds_total{{cpu="0",instance="{inst}",mode="{mode}"}}'
            writer.add_samples(
                Sample(key, "node_cpu_seconds_total", labels, int(ts), 15.0 * share * i, "COUNTER")
                for i, ts in enumerate(t)
            )
        for name, value in (
            ("node_memory_MemTotal_bytes", 8 << 30),
            ("node_memory_MemAvailable_bytes", 6 << 30),
        ):
            key = f'{name}{{instance="{inst}"}}'
            writer.add_samples(
                Sample(key, name, {"instance": inst}, int(ts), float(value), "GAUGE") for ts in t
            )
    writer.flush()
    client.close()
    with local_store(settings) as store_client:
        (section,) = Sections(store_client, Period(NOW_MS / 1000 - 3600, NOW_MS / 1000)).all(
            ["resources"]
        )
    assert not section.error, section.error
    rows = {r[0]: r for r in section.rows}
    assert set(rows) == {"a:9100", "b:9100"}
    assert float(rows["a:9100"][1]) == pytest.approx(25, abs=0.5)
    assert float(rows["b:9100"][1]) == pytest.approx(75, abs=0.5)
    assert rows["a:9100"][3] == "2.0 GiB" and len(section.figures) == 1
