"""Batching writer: ``add_*`` buffers rows per table, ``flush`` inserts them.

The sink model of quix-streams: nothing reaches ClickHouse until ``flush``; a table's
buffer is emptied only after its insert succeeded, so a failed flush can be retried
as is. Inserts are column-oriented (clickhouse-connect native format).

A failed insert is retried as a whole only if the error is transient (``transient``:
the connection, a timeout, or a server error about the server rather than the rows).
Any other error is a row the table cannot hold: the batch is split in halves until
the rows it refuses are alone (``log2(rows)`` inserts per bad row), the others are
stored, and the refused rows are listed in ``rejected`` with the message each came
from (``Columns.mark``), for the store to dead-letter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError, InternalError, OperationalError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.metrics.samples import Sample, SampleBatch
from monitoring.sinks.clickhouse.connection import with_receive_timeout
from monitoring.sinks.clickhouse.rows import (
    ACK_COLUMNS,
    AGGREGATE_COLUMNS,
    ALERT_EVENT_COLUMNS,
    ANOMALY_COLUMNS,
    DELIVERY_COLUMNS,
    LOG_COLUMNS,
    LOG_TEMPLATE_COLUMNS,
    SERIES_COLUMNS,
    Columns,
    SampleColumns,
    SeriesIds,
    add_ack,
    add_aggregate,
    add_alert_event,
    add_anomaly,
    add_delivery,
    add_log,
    add_log_batch,
    add_log_template,
    add_sample_batch,
    add_samples,
)

# Series first: a sample never lands before its series row.
TABLES = (
    "series", "samples", "aggregates", "anomalies", "deliveries", "logs", "log_templates",
    "alert_events", "alert_acks",
)  # fmt: skip
# clickhouse-connect waits 300 s for an answer by default, as long as the consumer's
# max.poll.interval.ms: a hung insert would look healthy until the group dropped us.
SEND_RECEIVE_TIMEOUT_S = 30
# Server error codes about the server, not the rows: retried, never split. Timeouts,
# network, memory, too many parts, read-only or full disks, access, a missing table or
# column (a schema not migrated yet), keeper, cancelled queries.
RETRY_CODES = frozenset({
    8, 16, 32, 47, 60, 81, 159, 164, 173, 192, 194, 202, 203, 209, 210, 225, 236, 241,
    242, 243, 252, 279, 319, 373, 394, 425, 497, 516, 999,
})  # fmt: skip
_CODE = re.compile(r"(?:\bCode: |error code )(\d+)")


# chDB's answer to every query once its process took a fatal signal (an abort in any
# thread, librdkafka's assertions included): chDB's signal handler catches it, the
# process lives on, the engine refuses everything for ever
ENGINE_DEAD_CODE = 236  # ABORTED


def engine_dead(e: BaseException) -> bool:
    """The embedded engine is dead for good ("The server is shutting down due to a
    fatal error", Code 236): only a new process brings it back.

    >>> engine_dead(DatabaseError("Code: 236. DB::Exception: The server is shutting "
    ...     "down due to a fatal error. (ABORTED)"))
    True
    >>> engine_dead(DatabaseError("Code: 236. DB::Exception: Query was cancelled. (ABORTED)"))
    False
    """
    m = _CODE.search(str(e))
    return m is not None and int(m.group(1)) == ENGINE_DEAD_CODE and "fatal error" in str(e)


def transient(e: BaseException) -> bool:
    """An insert error worth retrying as is: the connection or a timeout, an internal
    error of the client, or a server error in ``RETRY_CODES``. Any other error
    (a value a column cannot hold, a row the server cannot parse) is about rows.

    >>> transient(OperationalError("connection refused")), transient(ValueError("x"))
    (True, False)
    >>> transient(DatabaseError("Code: 241. DB::Exception: Memory limit exceeded"))
    True
    >>> transient(DatabaseError("Code: 53. DB::Exception: Type mismatch"))
    False
    """
    if isinstance(e, OperationalError | InternalError | OSError | TimeoutError):
        return True
    if isinstance(e, DatabaseError):
        m = _CODE.search(str(e))
        return m is not None and int(m.group(1)) in RETRY_CODES
    return False


def writer_dsn(dsn: str, timeout_s: int = SEND_RECEIVE_TIMEOUT_S) -> str:
    """``dsn`` with ``send_receive_timeout`` for an HTTP server (unless it sets one);
    see ``connection.with_receive_timeout``.

    >>> writer_dsn("http://u:p@ch:8123/db")
    'http://u:p@ch:8123/db?send_receive_timeout=30'
    >>> writer_dsn("chdb:///.data/chdb")
    'chdb:///.data/chdb'
    """
    return with_receive_timeout(dsn, timeout_s)


class Rejected(NamedTuple):
    """A row a table refused: its table, the message it came from, the error."""

    table: str
    source: Any
    error: str


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
        self.rejected = Counter(
            "monitoring_store_rows_rejected",
            "Rows a table refused (their messages dead-lettered)",
            ["table"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "monitoring_store_dead_letters",
            "Messages sent to the dead-letter topic",
            ["reason"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "monitoring_store_dead_letter_failures",
            "Dead letters the producer refused (logged, then skipped)",
            registry=registry,
        )


class Writer:
    """Row buffers of the three tables and their batched inserts."""

    def __init__(
        self, client: Client, metrics: StoreMetrics, series_refresh_ms: int = 60_000
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.ids = SeriesIds(refresh_ms=series_refresh_ms)
        self.samples = SampleColumns()
        self.buffers: dict[str, Columns] = {
            "series": Columns(SERIES_COLUMNS),
            "samples": self.samples,
            "aggregates": Columns(AGGREGATE_COLUMNS),
            "anomalies": Columns(ANOMALY_COLUMNS),
            "deliveries": Columns(DELIVERY_COLUMNS),
            "alert_events": Columns(ALERT_EVENT_COLUMNS),
            "alert_acks": Columns(ACK_COLUMNS),
            "logs": Columns(LOG_COLUMNS),
            "log_templates": Columns(LOG_TEMPLATE_COLUMNS),
        }
        self.source: Any = None  # the message the rows being added come from
        self.rejected: list[Rejected] = []  # rows refused by flushes, until taken

    @property
    def pending(self) -> int:
        """Buffered rows of all tables."""
        return sum(len(b) for b in self.buffers.values())

    def add_samples(self, samples: Iterable[Sample]) -> int:
        """Buffer samples (and the series rows due: ``rows.SeriesIds``)."""
        n = add_samples(samples, self.ids, self.samples, self.buffers["series"])
        self._mark("samples", "series")
        return n

    def add_sample_batch(self, batch: SampleBatch) -> int:
        """Buffer a validated batch as columns: the rows of ``add_samples``, faster."""
        n = add_sample_batch(batch, self.ids, self.samples, self.buffers["series"])
        self._mark("samples", "series")
        return n

    def add_aggregate(self, record: Mapping[str, Any], version: int) -> None:
        """Buffer one decoded Aggregate record."""
        add_aggregate(record, version, self.ids, self.buffers["aggregates"])
        self._mark("aggregates")

    def add_anomaly(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded Anomaly record."""
        add_anomaly(record, self.ids, self.buffers["anomalies"])
        self._mark("anomalies")

    def add_delivery(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded Delivery record (notifier delivery log)."""
        add_delivery(record, self.buffers["deliveries"])
        self._mark("deliveries")

    def add_alert_event(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded Alert record (an alert's state change)."""
        add_alert_event(record, self.buffers["alert_events"])
        self._mark("alert_events")

    def add_ack(
        self, time_ms: int, fingerprint: str, group_key: str, by: str, comment: str
    ) -> None:
        """Buffer one acknowledgement of an alert (``fingerprint``) or a group."""
        add_ack(time_ms, fingerprint, group_key, by, comment, self.buffers["alert_acks"])
        self._mark("alert_acks")

    def add_log(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded StoredLog record."""
        add_log(record, self.buffers["logs"])
        self._mark("logs")

    def add_log_batch(self, record: Mapping[str, Any]) -> None:
        """Buffer the rows of one decoded StoredLogBatch."""
        add_log_batch(record, self.buffers["logs"])
        self._mark("logs")

    def add_log_template(self, record: Mapping[str, Any]) -> None:
        """Buffer one decoded LogTemplate event."""
        add_log_template(record, self.buffers["log_templates"])
        self._mark("log_templates")

    def _mark(self, *tables: str) -> None:
        for t in tables:
            self.buffers[t].mark(self.source)

    def take_rejected(self) -> list[Rejected]:
        """The rows refused since the last call (their tables hold the others)."""
        out, self.rejected = self.rejected, []
        return out

    def flush(self) -> int:
        """Insert every non-empty buffer; return rows written. Raises on a transient
        failure (``transient``); rows refused for what they hold go to ``rejected``.

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
            cols = buf.columns()
            try:
                self._insert(table, buf.names, cols)
            except Exception as e:
                self.metrics.insert_failures.labels(table).inc()
                if transient(e):
                    raise
                refused = self._split(table, buf.names, cols, 0, n, e)
                self.rejected += [
                    Rejected(table, buf.source_of(i), repr(err)) for i, err in refused
                ]
                self.metrics.rejected.labels(table).inc(len(refused))
                n -= len(refused)
            self.metrics.insert_seconds.labels(table).observe(time.perf_counter() - t0)
            self.metrics.rows.labels(table).inc(n)
            self.metrics.batches.labels(table).inc()
            buf.take()
            total += n
        self.metrics.pending.set(self.pending)
        return total

    def _insert(self, table: str, names: tuple[str, ...], cols: list[Any]) -> None:
        self.client.insert(table, cols, column_names=names, column_oriented=True)

    def _split(
        self, table: str, names: tuple[str, ...], cols: list[Any], lo: int, hi: int,
        error: Exception,
    ) -> list[tuple[int, Exception]]:  # fmt: skip
        """Rows lo..hi failed with ``error``: insert each half, splitting again the
        halves that fail, down to single rows; return the refused rows. Raises a
        transient error as it comes (the buffer, still whole, is retried later)."""
        if hi - lo == 1:
            return [(lo, error)]
        mid = (lo + hi) // 2
        refused: list[tuple[int, Exception]] = []
        for a, b in ((lo, mid), (mid, hi)):
            try:
                self._insert(table, names, [c[a:b] for c in cols])
            except Exception as e:
                if transient(e):
                    raise
                refused += self._split(table, names, cols, a, b, e)
        return refused
