"""Run a migration that rebuilds table ``x`` through a copy ``y`` (008, 012) without
losing rows that another store inserts meanwhile.

Such a migration copies ``x`` into ``y``, swaps them with ``EXCHANGE TABLES x AND y`` and
drops ``y`` (then the old table). A store still inserting into ``x`` after the copy
began (an old version during a rolling upgrade) wrote into the old table. So before the
drop this waits for the inserts that were running at the swap to end, then copies into
the new ``x`` every row of the old table's parts that the copy may not have read: parts
absent when the migration started (new inserts, and merges of old parts with new ones).
Copying a row twice is harmless: the rebuilt tables are ReplacingMergeTrees, read with
``FINAL``. Inserts still running after ``INFLIGHT_WAIT_S`` fail the migration before the
drop. A ``y`` left by an interrupted run is copied into ``x`` first if the run had
swapped them (``x`` then has the migration's sorting key: ``y`` holds the old table's
rows), and dropped if it had not (``y`` is the partial copy).
"""

from __future__ import annotations

import re
import time

from clickhouse_connect.driver.client import Client

from monitoring.log import get_logger
from monitoring.sinks.clickhouse.migration_lock import MigrationLock

log = get_logger("migrations")

INFLIGHT_WAIT_S = 120.0  # inserts running at the swap are waited for this long, at most
_POLL_S = 0.2


class RebuildIncomplete(RuntimeError):
    """Inserts into the old table outlasted the wait: the table is kept for the next run."""


def _bare(key: str) -> str:
    """A sorting key without spaces and outer parentheses, for comparison.

    >>> _bare("(a, toDate(b))"), _bare("a, toDate(b)")
    ('a,toDate(b)', 'a,toDate(b)')
    """
    key = re.sub(r"\s+", "", key)
    if key.startswith("(") and key.endswith(")"):
        depth = 0
        for i, ch in enumerate(key):
            depth += {"(": 1, ")": -1}.get(ch, 0)
            if depth == 0 and i < len(key) - 1:
                return key  # "(a)+(b)": not one outer pair
        return key[1:-1]
    return key


def target_key(statements: list[str], y: str) -> str | None:
    """The sorting key of ``y`` as the migration creates it (its ``ORDER BY``), bare.

    >>> target_key(["CREATE TABLE t_new (a UInt8) ENGINE = MergeTree ORDER BY (a)"], "t_new")
    'a'
    """
    create = re.compile(rf"^CREATE\s+TABLE\s+(IF\s+NOT\s+EXISTS\s+)?{re.escape(y)}\b", re.I)
    for stmt in statements:
        if create.match(stmt):
            m = re.search(r"\bORDER\s+BY\s+(?P<key>.+?)\s*(\bTTL\b|\bSETTINGS\b|\bSAMPLE\b|$)",
                          stmt, re.I | re.S)  # fmt: skip
            return _bare(m.group("key")) if m else None
    return None


class Rebuild:
    """The statements of one rebuild migration of ``x`` through ``y``."""

    def __init__(
        self,
        client: Client,
        lock: MigrationLock,
        x: str,
        y: str,
        inflight_wait_s: float = INFLIGHT_WAIT_S,
    ) -> None:
        self.client = client
        self.lock = lock
        self.x = x
        self.y = y
        self.inflight_wait_s = inflight_wait_s
        self._drop_y = re.compile(rf"^DROP\s+TABLE\s+{re.escape(y)}$", re.I | re.ASCII)

    def run(self, statements: list[str]) -> None:
        """Run ``statements`` (the migration's), with the catch-up before dropping ``y``."""
        swap = next((i for i, s in enumerate(statements) if s.upper().startswith("EXCHANGE")), -1)
        if not any(self._drop_y.match(s) for s in statements[swap + 1 :]):
            raise ValueError(f"a rebuild of {self.x} must DROP TABLE {self.y} after its EXCHANGE")
        if self._exists(self.x) and self._exists(self.y):
            self._leftover(target_key(statements, self.y))
        known = self._parts(self.x)
        inflight: list[str] | None = None
        for stmt in statements:
            self.lock.check()
            if inflight is not None and self._drop_y.match(stmt):
                self._wait_for(inflight)
                self._copy(self.y, self.x, known)
            self.client.command(f"{self.lock.mark}\n{stmt}")
            if stmt.upper().startswith("EXCHANGE"):
                inflight = self._inserts_running()

    def _leftover(self, key: str | None) -> None:
        """``y`` left by an interrupted run: the old table (swapped) or the partial copy."""
        rows = self.client.query(
            "SELECT name, sorting_key FROM system.tables WHERE database = currentDatabase() "
            "AND name IN {t:Array(String)}",
            parameters={"t": [self.x, self.y]},
        ).result_rows
        keys = {str(r[0]): str(r[1]) for r in rows}
        x_key, y_key = _bare(keys.get(self.x, "")), _bare(keys.get(self.y, ""))
        if key is not None and x_key == key and y_key != key:
            log.warning("rebuild_leftover_kept", table=self.y)
            self.lock.check()
            self._copy(self.y, self.x, known=[])
        elif key is not None and y_key == key and x_key != key:
            log.warning("rebuild_leftover_dropped", table=self.y)
            self.lock.check()
            self.client.command(f"{self.lock.mark}\nDROP TABLE {self.y}")
        else:
            raise RuntimeError(
                f"{self.y} is left by an interrupted rebuild of {self.x}, and their sorting "
                f"keys ({x_key!r}, {y_key!r}; the migration's: {key!r}) do not tell whether "
                f"they were swapped: copy the rows {self.x} lacks, drop {self.y}, start again"
            )

    def _exists(self, table: str) -> bool:
        rows = self.client.query(
            "SELECT count() FROM system.tables WHERE database = currentDatabase() "
            "AND name = {t:String}",
            parameters={"t": table},
        ).result_rows
        return int(rows[0][0]) > 0

    def _parts(self, table: str) -> list[str]:
        rows = self.client.query(
            "SELECT name FROM system.parts WHERE database = currentDatabase() "
            "AND table = {t:String} AND active",
            parameters={"t": table},
        ).result_rows
        return [str(r[0]) for r in rows]

    def _columns(self, table: str) -> list[str]:
        rows = self.client.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() "
            "AND table = {t:String} AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') "
            "ORDER BY position",
            parameters={"t": table},
        ).result_rows
        return [str(r[0]) for r in rows]

    def _copy(self, src: str, dst: str, known: list[str]) -> None:
        """Insert into ``dst`` the rows of ``src``'s parts not named in ``known``."""
        theirs = set(self._columns(src))
        cols = ", ".join(f"`{c}`" for c in self._columns(dst) if c in theirs)
        self.client.command(
            f"{self.lock.mark}\nINSERT INTO {dst} ({cols}) SELECT {cols} FROM {src} "
            "WHERE _part NOT IN {known:Array(String)} "
            "SETTINGS max_partitions_per_insert_block = 0",
            parameters={"known": known},
        )

    def _inserts_running(self) -> list[str]:
        rows = self.client.query(
            "SELECT query_id FROM system.processes "
            "WHERE query_kind = 'Insert' AND query_id != queryID()"
        ).result_rows
        return [str(r[0]) for r in rows]

    def _wait_for(self, query_ids: list[str]) -> None:
        """Wait until the inserts ``query_ids`` ended (their parts are then committed)."""
        deadline = time.monotonic() + self.inflight_wait_s
        while query_ids:
            rows = self.client.query(
                "SELECT query_id FROM system.processes WHERE query_id IN {ids:Array(String)}",
                parameters={"ids": query_ids},
            ).result_rows
            query_ids = [str(r[0]) for r in rows]
            if not query_ids:
                return
            if time.monotonic() >= deadline:
                raise RebuildIncomplete(
                    f"{len(query_ids)} inserts into the old {self.x} still ran "
                    f"{self.inflight_wait_s:g} s after the swap; it is kept as {self.y}, "
                    "whose rows the next run copies"
                )
            self.lock.check()
            time.sleep(_POLL_S)
