"""Read-only SQL for users, enforced by the engine rather than by string matching.

A statement goes through four gates before it runs:

1. Size: at most ``storage.query.max_sql_bytes``, no NUL byte.
2. The engine parses it: ``formatQuery`` (bound as a parameter, never spliced into SQL)
   returns ClickHouse's canonical text of one statement, with comments gone and every
   string and identifier escaped onto one line. More than one statement, an unclosed
   comment or any syntax error is refused here, and only the canonical text runs.
3. The engine's AST of that text (``EXPLAIN AST``) must be a SELECT, SHOW, DESCRIBE,
   EXISTS, SHOW CREATE or EXPLAIN of a SELECT, with no ``INTO OUTFILE``, no
   ``SETTINGS`` clause, no table function outside :data:`TABLE_FUNCTIONS_ALLOWED` (an
   allow-list: ``file``, ``url``, ``s3``, ``remote``, ``mysql``, ``executable``,
   ``input``... reach files, URLs, hosts or programs) and no function in
   :data:`FUNCTIONS_REFUSED` (``file()`` also reads files as a scalar function).
4. It runs with the query limits (wall time, result rows and bytes, memory) and then
   ``readonly=1``, which the engine applies last: no write, no DDL, and no setting
   can be changed after it, by the statement or anyone else.

On a ClickHouse server, point ``storage.query_dsn`` at a user whose profile has
``readonly=2`` (it may set the limits, and the statement still runs as ``readonly=1``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from clickhouse_connect.driver.binding import external_bind_re
from clickhouse_connect.driver.client import Client

from monitoring.config import QueryLimits

TABLE_FUNCTIONS_ALLOWED = frozenset(
    {"numbers", "numbers_mt", "zeros", "zeros_mt", "generateseries", "generate_series",
     "values", "view", "null"}
)  # fmt: skip
FUNCTIONS_REFUSED = frozenset({"file", "catboostevaluate", "getclienthttpheader"})
ROOTS = {
    "SelectWithUnionQuery": "SELECT",
    "ShowTables": "SHOW",
    "DescribeQuery": "DESCRIBE",
    "ExistsTableQuery": "EXISTS",
    "ShowCreateTableQuery": "SHOW CREATE",
    "Explain": "EXPLAIN",
}
_FUNCTION = re.compile(r"^\s*Function (\S+)")
_OUTFILE = re.compile(r"^INTO OUTFILE", re.M)


# ClickHouse's error codes for the refusals, as its HTTP interface reports them.
SYNTAX_ERROR, READONLY, QUERY_IS_TOO_LARGE, ACCESS_DENIED = 62, 164, 229, 497
_CODE = re.compile(r"Code: (\d+)\.")


class NotReadOnly(ValueError):
    """The statement is refused: not one read-only query of what users may reach.

    ``code`` is the ClickHouse error code a server would answer (READONLY by default).
    """

    def __init__(self, message: str, code: int = READONLY) -> None:
        super().__init__(message)
        self.code = code


class ResultTooLarge(RuntimeError):
    """The result is over ``storage.query.max_result_bytes``."""


class ReadOnlyQueries:
    """Runs users' statements on ``client`` through the gates above.

    >>> ReadOnlyQueries.limit_settings(QueryLimits())["readonly"]
    1
    """

    def __init__(self, client: Client, limits: QueryLimits | None = None) -> None:
        self.client = client
        self.limits = limits or QueryLimits()
        self._settings: dict[str, Any] | None = None
        self._table_functions: frozenset[str] | None = None

    @property
    def settings(self) -> dict[str, Any]:
        """The per-query settings for this client's user, asked of the engine once: the
        limits, then ``readonly=1`` unless the user is read-only already. A server's
        ``readonly=2`` user (docs/security.md) may set the limits but not ``readonly``
        (the engine refuses any change of it, even to 1): every query would fail."""
        if self._settings is None:
            fixed = self.limit_settings(self.limits)
            try:
                rows = self.client.query("SELECT getSetting('readonly')").result_rows
            except Exception:  # the engine is down: asked again at the next query
                return fixed
            if int(rows[0][0]):
                del fixed["readonly"]
            self._settings = fixed
        return self._settings

    @staticmethod
    def limit_settings(limits: QueryLimits) -> dict[str, Any]:
        """The per-query settings: limits first, ``readonly=1`` last (order matters)."""
        return {
            "max_execution_time": max(1, int(limits.timeout.total_seconds())),
            "timeout_overflow_mode": "throw",
            "max_result_rows": limits.max_result_rows,
            "max_result_bytes": limits.max_result_bytes,
            "result_overflow_mode": "throw",
            "max_memory_usage": limits.max_memory_bytes,
            "readonly": 1,
        }

    def table_functions(self) -> frozenset[str]:
        """Every table function the engine knows (lower-cased), asked once."""
        if self._table_functions is None:
            rows = self.client.query(
                "SELECT name FROM system.table_functions", settings=self.settings
            ).result_rows
            self._table_functions = frozenset(str(r[0]).lower() for r in rows)
        return self._table_functions

    def canonical(self, sql: str, parameters: Mapping[str, str] | None = None) -> str:
        """The engine's canonical text of ``sql``; NotReadOnly if any gate refuses it.

        ``parameters`` are the values of ``{name:Type}`` placeholders in ClickHouse's
        text form (as ``param_<name>`` carries them over HTTP): the engine substitutes
        them before it shows the tree, and takes them as they are.
        """
        if len(sql.encode()) > self.limits.max_sql_bytes:
            raise NotReadOnly(
                f"query longer than {self.limits.max_sql_bytes} bytes", QUERY_IS_TOO_LARGE
            )
        if "\0" in sql:
            raise NotReadOnly("query contains a NUL byte", SYNTAX_ERROR)
        if not sql.strip().rstrip(";").strip():
            raise NotReadOnly("empty query", SYNTAX_ERROR)
        try:
            text = str(
                self.client.query(
                    "SELECT formatQuery({q:String})", parameters={"q": sql}, settings=self.settings
                ).result_rows[0][0]
            )
        except Exception as e:
            raise NotReadOnly(f"not one valid statement: {_first_line(e)}", _code(e)) from None
        if _OUTFILE.search(text):
            raise NotReadOnly("INTO OUTFILE is not allowed", ACCESS_DENIED)
        try:
            # Parsing only; settings would show in the tree as this statement's own.
            # Values go only to {name:Type} placeholders, which the engine binds: without
            # one, clickhouse-connect would splice them into the text itself (%(name)s).
            explain = f"EXPLAIN AST {text}"
            bound = None
            if parameters and external_bind_re.search(explain):
                bound = {k: _Verbatim(v) for k, v in parameters.items()}
            rows = self.client.query(explain, parameters=bound).result_rows
            ast = [str(r[0]) for r in rows]
        except Exception as e:
            raise NotReadOnly(f"not one valid statement: {_first_line(e)}", _code(e)) from None
        self._check_ast(ast, text.split(None, 1)[0].upper())
        return text

    def _check_ast(self, ast: list[str], keyword: str) -> None:
        root = ast[0].split(None, 1)[0] if ast else ""
        if root not in ROOTS:
            raise NotReadOnly(
                f"{keyword} is not allowed: only {', '.join(ROOTS.values())} statements"
            )
        if root == "Explain" and not (len(ast) > 1 and ast[1].strip().startswith("Select")):
            raise NotReadOnly("only EXPLAIN of a SELECT is allowed")
        table_functions = self.table_functions()
        for line in ast[1:]:
            node = line.strip()
            depth = len(line) - len(line.lstrip(" "))
            if depth == 1 and node.startswith("Literal"):
                raise NotReadOnly("INTO OUTFILE is not allowed", ACCESS_DENIED)
            if node == "Set" or node.startswith("Set "):
                raise NotReadOnly("SETTINGS clauses are not allowed: limits are fixed")
            m = _FUNCTION.match(line)
            if m:
                name = m.group(1).lower()
                if name in FUNCTIONS_REFUSED or (
                    name in table_functions and name not in TABLE_FUNCTIONS_ALLOWED
                ):
                    raise NotReadOnly(
                        f"function {m.group(1)} is not allowed: it reaches outside the database",
                        ACCESS_DENIED,
                    )

    def run(self, sql: str) -> dict[str, Any]:
        """Run a refused-unless-read-only statement; the result as ``{columns, types, rows}``."""
        result = self.client.query(self.canonical(sql), settings=self.settings)
        rows = [[jsonable(v) for v in row] for row in result.result_rows]
        # The engine checks result bytes per block; one large block can pass its check.
        size = len(json.dumps(rows, default=str))
        if size > self.limits.max_result_bytes:
            raise ResultTooLarge(
                f"Limit for result exceeded: {size} bytes, max {self.limits.max_result_bytes}"
            )
        return {
            "columns": list(result.column_names),
            "types": [t.name for t in result.column_types],
            "rows": rows,
        }


class _Verbatim:
    """A parameter value clickhouse-connect sends as it is (it escapes ``str`` values)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __str__(self) -> str:
        return self.text


def _code(e: Exception) -> int:
    """The engine's error code in ``e``'s message (SYNTAX_ERROR when it names none)."""
    m = _CODE.search(str(e))
    return int(m.group(1)) if m else SYNTAX_ERROR


def _first_line(e: Exception) -> str:
    msg = str(e).strip().split("\n")[0]
    return msg.split(": In scope", 1)[0][:500]


def jsonable(value: Any) -> Any:
    """A JSON-friendly form of a ClickHouse value."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID | IPv4Address | IPv6Address):
        return str(value)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
