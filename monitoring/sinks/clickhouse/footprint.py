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


def samples_before(client: Client, end_ms: int) -> float | None:
    """Bytes on disk per row of the samples stamped before ``end_ms``, alone: copied
    into a scratch table of the same definition and merged (``OPTIMIZE ... FINAL``),
    so that a run's phases can be compared whatever else the table holds."""
    client.command("DROP TABLE IF EXISTS samples_footprint")
    client.command("CREATE TABLE samples_footprint AS samples")
    try:
        client.command(
            "INSERT INTO samples_footprint SELECT * FROM samples "
            "WHERE ts < fromUnixTimestamp64Milli({end:Int64}) "
            "SETTINGS max_partitions_per_insert_block = 0",
            parameters={"end": end_ms},
        )
        client.command("OPTIMIZE TABLE samples_footprint FINAL")
        rows, size = client.query(
            "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts WHERE active "
            "AND database = currentDatabase() AND table = 'samples_footprint'"
        ).result_rows[0]
    finally:
        client.command("DROP TABLE IF EXISTS samples_footprint")
    return int(size) / int(rows) if rows else None
