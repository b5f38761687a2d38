"""Batching writer: ``add_*`` buffers rows per table, ``flush`` inserts them.

The sink model of quix-streams: nothing reaches ClickHouse until ``flush``; a table's
buffer is emptied only after its insert succeeded, so a failed flush can be retried
as is. Inserts are column-oriented (clickhouse-connect native format).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from clickhouse_connect.driver.client import Client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.metrics.samples import Sample, SampleBatch
from monitoring.sinks.clickhouse.rows import (
    AGGREGATE_COLUMNS,
    ANOMALY_COLUMNS,
    DELIVERY_COLUMNS,
    LOG_COLUMNS,
    LOG_TEMPLATE_COLUMNS,
    SERIES_COLUMNS,
    Columns,
    SampleColumns,
    SeriesIds,
    add_aggregate,
    add_anomaly,
    add_delivery,
    add_log,
    add_log_batch,
    add_log_template,
    add_sample_batch,
    add_samples,
)

# Series first: a sample never lands before its series row.
TABLES = ("series", "samples", "aggregates", "anomalies", "deliveries", "logs", "log_templates")


class StoreMetrics:
    """The store's self-metrics, registered in an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.rows = Counter(
            "monitoring_store_rows_inserted", "Rows inserted", ["table"], registry=registry
        )
        self.batches = Counter(
            "monitoring_store_batches", "Insert batches", ["table"], registry=registry
        )
        self.insert_seconds = Histogram(
            "monitoring_store_insert_seconds",
            "Insert latency",
            ["table"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.insert_failures = Counter(
            "monitoring_store_insert_failures", "Failed inserts", ["table"], registry=registry
        )
        self.invalid = Counter(
            "monitoring_store_invalid_events",
            "Events or samples skipped",
            ["reason"],
            registry=registry,
        )
        self.messages = Counter(
            "monitoring_store_messages", "Kafka messages consumed", ["topic"], registry=registry
        )
        self.pending = Gauge("monitoring_store_pending_rows", "Buffered rows", registry=registry)
        self.commits = Counter("monitoring_store_commits", "Offset commits", registry=registry)


class Writer:
    """Row buffers of the three tables and their batched inserts."""

    def __init__(self, client: Client, metrics: StoreMetrics) -> None:
        self.client = client
        self.metrics = metrics
        self.ids = SeriesIds()
        self.samples = SampleColumns()
        self.buffers: dict[str, Columns] = {
            "series": Columns(SERIES_COLUMNS),
            "samples": self.samples,
            "aggregates": Columns(AGGREGATE_COLUMNS),
            "anomalies": Columns(ANOMALY_COLUMNS),
            "deliveries": Columns(DELIVERY_COLUMNS),
            "logs": Columns(LOG_COLUMNS),
            "log_templates": Columns(LOG_TEMPLATE_COLUMNS),
        }

    @property
    def pending(self) -> int:
        """Buffered rows of all tables."""
        return sum(len(b) for b in self.buffers.values())

    def add_samples(self, samples: Iterable[Sample]) -> int:
        """Buffer samples (and the series row of each series new to this process)."""
        return add_samples(samples, self.ids, self.samples, self.buffers["series"])

    def add_sample_batch(self, batch: SampleBatch) -> int:
        """Buffer a validated batch as columns: the rows of ``add_samples``, faster."""
        return add_sample_batch(batch, self.ids, self.samples, self.buffers["series"])

    def add_aggregate(self, record: Mapping[str, Any], version: int) -> None:
        """Buffer one decoded Aggregate record."""
        add_aggregate(record, version, self.ids, self.buffers["aggregates"])

    def add_anomaly(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded Anomaly record."""
        add_anomaly(record, self.ids, self.buffers["anomalies"])

    def add_delivery(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded Delivery record (notifier delivery log)."""
        add_delivery(record, self.buffers["deliveries"])

    def add_log(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded StoredLog record."""
        add_log(record, self.buffers["logs"])

    def add_log_batch(self, record: Mapping[str, Any]) -> None:
        """Buffer the rows of one decoded StoredLogBatch."""
        add_log_batch(record, self.buffers["logs"])

    def add_log_template(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded LogTemplate event."""
        add_log_template(record, self.buffers["log_templates"])

    def flush(self) -> int:
        """Insert every non-empty buffer; return rows written. Raises on failure.

        A table whose insert failed keeps its rows; tables already written are not
        written again on retry.
        """
        total = 0
        for table in TABLES:
            buf = self.buffers[table]
            n = len(buf)
            if not n:
                continue
            t0 = time.perf_counter()
            try:
                self.client.insert(
                    table, buf.columns(), column_names=buf.names, column_oriented=True
                )
            except Exception:
                self.metrics.insert_failures.labels(table).inc()
                raise
            self.metrics.insert_seconds.labels(table).observe(time.perf_counter() - t0)
            self.metrics.rows.labels(table).inc(n)
            self.metrics.batches.labels(table).inc()
            buf.take()
            total += n
        self.metrics.pending.set(self.pending)
        return total
