"""On-disk size per row of the store's tables, from ``system.parts``."""

from __future__ import annotations

from typing import Any

from clickhouse_connect.driver.client import Client

TABLES = ("samples", "aggregates", "series")


def storage_footprint(client: Client, optimize: bool = False) -> dict[str, Any]:
    """Bytes on disk per row of each table (active parts), plus the raw totals.

    ``optimize=True`` first runs ``OPTIMIZE TABLE ... FINAL`` so that duplicates are
    collapsed and parts merged, as a long-running store would see them.
    Keys: ``bytes_per_sample``, ``bytes_per_aggregate`` and ``tables`` (rows, bytes).
    """
    if optimize:
        for t in TABLES:
            client.command(f"OPTIMIZE TABLE {t} FINAL")
    rows = client.query(
        "SELECT table, sum(rows), sum(bytes_on_disk), sum(data_uncompressed_bytes) "
        "FROM system.parts WHERE active AND database = currentDatabase() "
        "AND table IN {tables:Array(String)} GROUP BY table",
        parameters={"tables": list(TABLES)},
    ).result_rows
    tables = {
        str(t): {"rows": int(r), "bytes_on_disk": int(b), "uncompressed_bytes": int(u)}
        for t, r, b, u in rows
    }

    def per_row(t: str) -> float | None:
        info = tables.get(t)
        return info["bytes_on_disk"] / info["rows"] if info and info["rows"] else None

    return {
        "bytes_per_sample": per_row("samples"),
        "bytes_per_aggregate": per_row("aggregates"),
        "tables": tables,
    }
