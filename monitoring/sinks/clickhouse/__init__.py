"""ClickHouse sink: versioned DDL, batching writer, the store process, its query endpoint.

Modules: ``connection`` (DSN -> client), ``migrations`` (DDL), ``rows`` (series_id,
column buffers), ``writer`` (batches), ``store`` (Kafka -> writer), ``query_server``
(HTTP), ``footprint`` (bytes per row).
"""

from __future__ import annotations

from monitoring.sinks.clickhouse.connection import StoreLocked, chdb_path, connect
from monitoring.sinks.clickhouse.footprint import storage_footprint
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.rows import series_id

__all__ = ["StoreLocked", "chdb_path", "connect", "migrate", "series_id", "storage_footprint"]
