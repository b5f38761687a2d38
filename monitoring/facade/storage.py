"""``MetricsStorage().store(metrics=..., retention=...)``.

``metrics`` are what ``aggregate`` returned (``AggregatedMetric``, stored in the
``aggregates`` table) and/or what ``collect`` returned (``Sample``, stored in
``samples``). ``retention`` is how long they are kept (``"30d"``, a timedelta; default
``storage.retention.aggregates``): the tables' TTL.

``local`` mode writes them with the store's own ``Writer`` into ClickHouse at
``storage.dsn`` (embedded chDB by default: this process then holds that directory; use a
separate one beside a running store), after its migrations, with the tables' TTL set to
``retention`` (samples: the shorter of it and ``storage.retention.samples``).
``query(sql)`` reads them back.

``pipeline`` mode: the running store owns the tables and their retention
(``storage.retention``, the platform's ``metrics.storage.retention``), so a
``retention`` longer than the configured one is refused. Windows the worker computed
are already on their way to ClickHouse; windows computed locally are sent to the
aggregates topic, from which the store writes them (replays collapse on their keys);
samples were sent by the collector. ``store`` returns once every one of them is stored
(waiting up to ``python_api.wait``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from monitoring.config import Settings, parse_duration
from monitoring.facade.aggregator import AggregatedMetric
from monitoring.facade.common import resolve, wait_for
from monitoring.metrics.samples import Sample


@dataclass(frozen=True)
class StoreResult:
    """What ``store`` wrote (or saw stored): rows per table, and the retention applied."""

    aggregates: int
    samples: int
    retention: timedelta


def _split(metrics: Any) -> tuple[list[AggregatedMetric], list[Sample]]:
    aggs: list[AggregatedMetric] = []
    samples: list[Sample] = []
    for m in metrics:
        if isinstance(m, AggregatedMetric):
            aggs.append(m)
        elif isinstance(m, Sample):
            samples.append(m)
        else:
            raise TypeError(f"{type(m).__name__}: store takes aggregate() or collect() results")
    return aggs, samples


class MetricsStorage:
    """Stores aggregated metrics and samples in ClickHouse (see the module)."""

    def __init__(self, settings: Settings | None = None, *, mode: str | None = None) -> None:
        self.settings, self.mode = resolve(settings, mode)
        self._client: Any = None

    def store(self, metrics: Any, retention: str | timedelta | None = None) -> StoreResult:
        """Store ``metrics`` and keep them ``retention`` (see the module)."""
        configured = self.settings.storage.retention
        keep = parse_duration(retention) if retention is not None else configured.aggregates
        if keep < timedelta(hours=1):
            raise ValueError(f"retention {retention!r}: at least 1h")
        aggs, samples = _split(metrics)
        if self.mode == "pipeline":
            return self._pipeline(aggs, samples, keep)
        from prometheus_client import CollectorRegistry

        from monitoring.sinks.clickhouse.connection import connect
        from monitoring.sinks.clickhouse.migrations import migrate
        from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

        st = self.settings.storage
        rt = st.retention.model_copy(
            update={"aggregates": keep, "samples": min(keep, st.retention.samples)}
        )
        st = st.model_copy(update={"retention": rt})
        if self._client is None:
            self._client = connect(st.dsn)
        migrate(self._client, st)  # creates the tables, or brings their TTL to ``keep``
        writer = Writer(self._client, StoreMetrics(CollectorRegistry()))
        version = int(time.time() * 1000)
        for a in aggs:
            writer.add_aggregate(a.aggregate.to_record(), version)
        writer.add_samples(samples)
        writer.flush()
        rejected = writer.take_rejected()
        if rejected:
            raise ValueError(f"{len(rejected)} rows refused by the store: {rejected[0]}")
        return StoreResult(len(aggs), len(samples), keep)

    def _pipeline(
        self, aggs: list[AggregatedMetric], samples: list[Sample], keep: timedelta
    ) -> StoreResult:
        from monitoring.facade.store_io import produce_aggregates, read_aggregates, stored_samples

        configured = self.settings.storage.retention.aggregates
        if keep > configured:
            raise ValueError(
                f"retention {keep}: the running store keeps aggregates {configured} "
                "(storage.retention.aggregates, the platform's metrics.storage.retention)"
            )
        produce_aggregates(self.settings, [a.aggregate for a in aggs if a.origin == "local"])
        want = {(a.series, a.window_ms, a.window_start_ms): a.aggregate.count for a in aggs}
        points = {(s.series, s.timestamp_ms) for s in samples}
        wait_s = self.settings.python_api.wait.total_seconds()

        def probe() -> bool | None:
            rows = read_aggregates(self.settings, want)
            got = {(r.series, r.window_ms, r.window_start_ms): r.count for r in rows}
            if any(got.get(k, -1) < n for k, n in want.items()):
                return None
            return True if stored_samples(self.settings, points) >= len(points) else None

        wait_for(probe, wait_s, f"{len(want)} windows and {len(points)} samples stored")
        return StoreResult(len(aggs), len(samples), keep)

    def query(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query over what is stored (the store's query
        endpoint in pipeline mode; this process's connection in local mode)."""
        if self.mode == "pipeline":
            from monitoring.facade.store_io import client

            with client(self.settings) as c:
                return [tuple(r) for r in c.sql(sql, params).rows]
        if self._client is None:
            from monitoring.sinks.clickhouse.connection import connect

            self._client = connect(self.settings.storage.dsn)
        return [tuple(r) for r in self._client.query(sql, parameters=params).result_rows]

    def close(self) -> None:
        """Close the local connection (chDB keeps the directory for this process)."""
        if self._client is not None:
            self._client.close()
            self._client = None
