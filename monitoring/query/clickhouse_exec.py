"""What one request to ClickHouse's HTTP interface runs, and on which engine.

:func:`parse_request` turns the URL parameters into a :class:`ChRequest`: transport
parameters (``database``, ``default_format``, ``query_id``, ``param_<name>``...) are
consumed, the few settings users may choose (output formatting, and limits only lower
than the store's) are kept, anything else is refused as a ClickHouse server with
``readonly=1`` refuses it (code 164). :func:`run` passes the statement through the
store's read-only gate (:class:`ReadOnlyQueries`, on its bounded queue), runs it with
the user's settings, the limits and ``readonly=1`` last, and asks the
engine for the format's bytes: a fresh chDB handle on the store's directory
(:class:`ChdbEngine`), or the ClickHouse server of ``storage.query_dsn``
(:class:`HttpEngine`). Nothing is re-encoded in Python.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from monitoring.config import QueryLimits
from monitoring.sinks.clickhouse.connection import read_only_timeout_s
from monitoring.sinks.clickhouse.read_only import NotReadOnly, ReadOnlyQueries

if TYPE_CHECKING:
    from monitoring.sinks.clickhouse.query_server import QueryServer

# ClickHouse error codes used here (system.errors / errorCodeToName).
CODE_NAMES = {
    1: "UNSUPPORTED_METHOD", 36: "BAD_ARGUMENTS", 48: "NOT_IMPLEMENTED", 62: "SYNTAX_ERROR",
    73: "UNKNOWN_FORMAT", 81: "UNKNOWN_DATABASE", 115: "UNKNOWN_SETTING",
    159: "TIMEOUT_EXCEEDED", 164: "READONLY", 202: "TOO_MANY_SIMULTANEOUS_QUERIES",
    229: "QUERY_IS_TOO_LARGE", 241: "MEMORY_LIMIT_EXCEEDED", 271: "CANNOT_DECOMPRESS",
    396: "TOO_MANY_ROWS_OR_BYTES", 497: "ACCESS_DENIED",
}  # fmt: skip
BAD_ARGUMENTS, NOT_IMPLEMENTED, SYNTAX_ERROR, READONLY = 36, 48, 62, 164
TOO_MANY_SIMULTANEOUS_QUERIES, TOO_MANY_ROWS_OR_BYTES, ACCESS_DENIED = 202, 396, 497

# ClickHouse's exceptionCodeToHTTPStatus, for the codes an engine answers here.
_STATUS = {
    **dict.fromkeys((36, 6, 27, 38, 41, 53, 62, 70, 117, 321, 427), 400),
    **dict.fromkeys((194,), 401),
    **dict.fromkeys((192, 193, 497, 516), 403),
    **dict.fromkeys((46, 47, 60, 73, 81, 115, 50, 63, 78, 511), 404),
    159: 408, 229: 413, 48: 501, 209: 503, 76: 503, 439: 503,
    # A full query queue: a server says 500; 503 lets clients and balancers retry.
    202: 503,
}  # fmt: skip
_ENGINE_CODE = re.compile(r"Code: (\d+)\. ")
_FORMAT_LINE = re.compile(r"^FORMAT (\w+)$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_QUERY_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

# URL parameters that are the HTTP transport's, not settings. Sessions are ignored:
# each query stands alone, and what a session would keep (SET, temporary tables) is
# refused by the gate anyway; clickhouse-connect sends a session_id by default.
_IGNORED = frozenset(
    {"user", "quota_key", "session_id", "session_timeout", "session_check", "buffer_size",
     "wait_end_of_query", "http_wait_end_of_query", "send_progress_in_http_headers",
     "http_headers_progress_interval_ms", "cancel_http_readonly_queries_on_client_close",
     "http_response_buffer_size", "http_zlib_compression_level", "enable_http_compression",
     "client_protocol_version", "query", "database", "default_format", "query_id",
     "password", "compress", "decompress"}
)  # fmt: skip
# Settings that only shape the output (or the parsing of inputs a read never has): an
# explicit list, so that no setting naming a file or a schema ever gets in by its prefix.
_FORMAT_SETTINGS = frozenset(
    {"date_time_output_format", "interval_output_format", "bool_true_representation",
     "bool_false_representation", "format_csv_delimiter", "format_csv_null_representation",
     "format_tsv_null_representation", "session_timezone", "extremes",
     "date_time_input_format", "cast_string_to_dynamic_use_inference",
     "output_format_json_quote_64bit_integers", "output_format_json_quote_64bit_floats",
     "output_format_json_quote_denormals", "output_format_json_quote_decimals",
     "output_format_json_escape_forward_slashes", "output_format_json_named_tuples_as_objects",
     "output_format_json_array_of_rows", "output_format_json_validate_utf8",
     "output_format_write_statistics", "output_format_decimal_trailing_zeros",
     "output_format_csv_crlf_end_of_line", "output_format_tsv_crlf_end_of_line",
     "output_format_arrow_string_as_string", "output_format_arrow_low_cardinality_as_dictionary",
     "output_format_arrow_fixed_string_as_fixed_byte_array",
     "output_format_parquet_string_as_string",
     "output_format_parquet_fixed_string_as_fixed_byte_array",
     "output_format_native_encode_types_in_binary_format",
     "output_format_binary_encode_types_in_binary_format",
     "output_format_binary_write_json_as_string", "output_format_pretty_color",
     "output_format_pretty_grid_charset", "output_format_pretty_row_numbers"}
)  # fmt: skip
# Output settings that can make the text far larger than the result: capped.
_FORMAT_CAPS = {
    "output_format_pretty_max_rows": 10_000,
    "output_format_pretty_max_column_pad_width": 250,
    "output_format_pretty_max_value_width": 10_000,
}
# Limits a user may lower, never raise: setting -> QueryLimits value.
_LIMITS = ("max_result_rows", "max_result_bytes", "max_execution_time", "max_memory_usage")


class ClickHouseError(Exception):
    """An error as ClickHouse's HTTP interface reports it: code, text, HTTP status."""

    def __init__(self, code: int, message: str, text: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self._text = text

    @property
    def status(self) -> int:
        """The HTTP status a ClickHouse server gives this code.

        >>> ClickHouseError(164, "x").status, ClickHouseError(62, "x").status
        (500, 400)
        """
        return _STATUS.get(self.code, 500)

    def text(self, version: str) -> str:
        """The body: ``Code: N. DB::Exception: message. (NAME) (version V)``.

        >>> ClickHouseError(164, "INSERT is not allowed").text("26.9")
        'Code: 164. DB::Exception: INSERT is not allowed. (READONLY) (version 26.9)\\n'
        """
        if self._text is not None:
            body = self._text.strip()
        else:
            name = CODE_NAMES.get(self.code, "UNKNOWN_EXCEPTION")
            body = f"Code: {self.code}. DB::Exception: {self.message.rstrip('.')}. ({name})"
        if "(version " not in body:
            body += f" (version {version})"
        return body + "\n"

    @classmethod
    def from_engine(cls, error: Exception | str) -> ClickHouseError:
        """The engine's own ``Code: N. DB::Exception: ...`` text, kept as it is.

        >>> e = ClickHouseError.from_engine("x Code: 396. DB::Exception: Limit. (TOO_MANY)")
        >>> e.code, e.text("1")
        (396, 'Code: 396. DB::Exception: Limit. (TOO_MANY) (version 1)\\n')
        """
        msg = str(error)
        m = _ENGINE_CODE.search(msg)
        if m is None:
            return cls(1001, msg.strip().split("\n")[0][:1000] or "query failed")
        return cls(int(m.group(1)), msg[m.start() :].split("\n")[0], msg[m.start() :])


@dataclass(frozen=True)
class ChRequest:
    """One request's parameters, checked; the statement is added by the HTTP layer."""

    default_format: str = "TabSeparated"
    database: str | None = None
    query_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    params: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict)
    protocol_version: str | None = None


def parse_request(items: list[tuple[str, str]], limits: QueryLimits) -> ChRequest:
    """The request that URL parameters ``items`` describe; ClickHouseError if refused.

    >>> r = parse_request([("default_format", "JSON"), ("param_x", "1"),
    ...                    ("output_format_json_quote_64bit_integers", "0"),
    ...                    ("max_result_rows", "10"), ("session_id", "s")], QueryLimits())
    >>> r.default_format, r.params, r.settings
    ('JSON', {'x': '1'}, {'output_format_json_quote_64bit_integers': '0', 'max_result_rows': '10'})
    >>> parse_request([("readonly", "0")], QueryLimits())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    monitoring.query.clickhouse_exec.ClickHouseError: Cannot modify 'readonly' setting in ...
    """
    values: dict[str, str] = {}
    params: dict[str, str] = {}
    settings: dict[str, str] = {}
    for key, value in items:
        if not _NAME.fullmatch(key):  # a name goes into SET's text: a plain word or nothing
            raise ClickHouseError(BAD_ARGUMENTS, f"bad parameter name {key[:100]!r}")
        if key.startswith("param_"):
            name = key[len("param_") :]
            if not _NAME.fullmatch(name):
                raise ClickHouseError(BAD_ARGUMENTS, f"bad query parameter name {name!r}")
            params[name] = value
        elif key in _IGNORED:
            values[key] = value
        elif key == "readonly":
            if value.strip() not in ("1", "2"):
                raise ClickHouseError(READONLY, "Cannot modify 'readonly' setting in readonly mode")
        elif key in _LIMITS:
            settings[key] = _lower_limit(key, value, limits)
        elif key in ("timeout_overflow_mode", "result_overflow_mode") and value == "throw":
            pass  # what the store runs with anyway (a proxied store sends them)
        elif key in _FORMAT_SETTINGS:
            settings[key] = value
        elif key in _FORMAT_CAPS:
            settings[key] = _capped(key, value)
        else:
            raise ClickHouseError(READONLY, f"Cannot modify '{key}' setting in readonly mode")
    for flag in ("compress", "decompress"):
        if values.get(flag, "0") not in ("0", ""):
            raise ClickHouseError(
                NOT_IMPLEMENTED,
                f"{flag}=1 (ClickHouse's block compression) is not supported: "
                "use enable_http_compression=1 and Accept-Encoding",
            )
    query_id = values.get("query_id") or str(uuid.uuid4())
    if not _QUERY_ID.fullmatch(query_id):  # echoed in a header, forwarded to a server
        raise ClickHouseError(BAD_ARGUMENTS, "query_id: up to 128 of [A-Za-z0-9_.:-]")
    fmt = values.get("default_format") or "TabSeparated"
    if not _NAME.fullmatch(fmt):
        raise ClickHouseError(73, f"Unknown format {fmt}")
    return ChRequest(
        default_format=fmt,
        database=values.get("database") or None,
        query_id=query_id,
        params=params,
        settings=settings,
        protocol_version=values.get("client_protocol_version"),
    )


def _capped(key: str, value: str) -> str:
    """``value`` of an output setting, at most its cap."""
    try:
        wanted = int(value)
    except ValueError:
        raise ClickHouseError(BAD_ARGUMENTS, f"{key}: not a number: {value!r}") from None
    return str(min(max(wanted, 0), _FORMAT_CAPS[key]))


def _lower_limit(key: str, value: str, limits: QueryLimits) -> str:
    """``value`` if it is within the store's limit for ``key``, else the limit."""
    ceiling = float(ReadOnlyQueries.limit_settings(limits)[key])
    try:
        wanted = float(value)
    except ValueError:
        wanted = math.nan
    if math.isnan(wanted):
        raise ClickHouseError(BAD_ARGUMENTS, f"{key}: not a number: {value!r}")
    if wanted <= 0 or wanted >= ceiling:  # 0 means "no limit": the store's holds
        return str(int(ceiling))
    return str(int(wanted)) if key != "max_execution_time" else f"{wanted:g}"


def query_settings(user: dict[str, str], limits: QueryLimits) -> dict[str, str]:
    """The settings a statement runs with: the user's, the limits, ``readonly=1`` last.

    >>> list(query_settings({"max_result_rows": "5", "extremes": "1"}, QueryLimits()))[:3]
    ['extremes', 'max_execution_time', 'timeout_overflow_mode']
    >>> query_settings({"max_result_rows": "5"}, QueryLimits())["max_result_rows"]
    '5'
    >>> list(query_settings({}, QueryLimits()))[-1]
    'readonly'
    """
    fixed = ReadOnlyQueries.limit_settings(limits)
    merged = {k: v for k, v in user.items() if k not in fixed}
    merged.update({k: user.get(k, str(v)) if k in _LIMITS else str(v) for k, v in fixed.items()})
    merged["readonly"] = merged.pop("readonly")  # applied last: nothing changes after it
    return merged


def assignments(settings: dict[str, str]) -> str:
    """``settings`` as ``SET``'s list, values quoted (the engine casts them).

    >>> assignments({"extremes": "1", "readonly": "1"})
    "extremes = '1', readonly = '1'"
    """
    for k in settings:
        if not _NAME.fullmatch(k):
            raise ClickHouseError(BAD_ARGUMENTS, f"bad setting name {k[:100]!r}")
    return ", ".join(f"{k} = {_quote(v)}" for k, v in settings.items())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def statement_format(canonical: str) -> str | None:
    """The FORMAT clause of the engine's canonical text (its own last line), if any.

    >>> statement_format("SELECT 1\\nFORMAT JSON"), statement_format("SELECT 1 AS FORMAT")
    ('JSON', None)
    """
    _, sep, last = canonical.rpartition("\n")
    m = _FORMAT_LINE.fullmatch(last) if sep else None
    return m.group(1) if m else None


@dataclass(frozen=True)
class Result:
    """An engine's answer: the format's bytes and what the response headers say."""

    body: bytes
    fmt: str
    summary: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


class Engine(Protocol):
    def run(self, text: str, settings: dict[str, str], fmt: str, request: ChRequest) -> Result:
        """``text`` (checked by the gate) with ``settings``, as ``fmt``'s bytes."""
        ...

    def close(self) -> None: ...


class ChdbEngine:
    """chDB on the store's directory; a fresh connection handle per query, its settings
    applied to the handle with ``SET`` first.

    A handle whose query failed in a format with a footer (JSON...) hands that footer to
    its next query (chDB 4.4), so a handle never serves two queries.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)

    def run(self, text: str, settings: dict[str, str], fmt: str, request: ChRequest) -> Result:
        import chdb

        conn = chdb.connect(self.path)
        try:
            start = time.perf_counter_ns()
            try:
                # On the handle, not in the statement: a SETTINGS clause would become part
                # of what EXPLAIN shows. readonly=1 comes last, so nothing changes after it.
                conn.query(f"SET {assignments(settings)}", "TabSeparated")
                res = conn.query(text, fmt, params=request.params)
            except Exception as e:
                raise ClickHouseError.from_engine(e) from None
            body = res.bytes() or b""
            summary = {
                "read_rows": str(res.rows_read()),
                "read_bytes": str(res.bytes_read()),
                "written_rows": "0",
                "written_bytes": "0",
                "result_bytes": str(len(body)),
                "elapsed_ns": str(time.perf_counter_ns() - start),
            }
            return Result(body, fmt, summary)
        finally:
            conn.close()

    def close(self) -> None:
        """Nothing held between queries."""


class HttpEngine:
    """A ClickHouse server (``storage.query_dsn``): the statement forwarded with the
    read-only client's URL and credentials, the server's bytes passed through."""

    def __init__(self, client: Any, limits: QueryLimits) -> None:
        self.url = str(client.url).rstrip("/") + "/"
        # clickhouse-connect keeps the auth headers on its transport, not the facade.
        headers: dict[str, str] = dict(getattr(client._backend, "headers", {}))
        keep = ("authorization", "x-clickhouse-user", "x-clickhouse-key")
        self.headers = {k: v for k, v in headers.items() if k.lower() in keep}
        self.database = client.database
        self.http = httpx.Client(timeout=read_only_timeout_s(limits))

    def run(self, text: str, settings: dict[str, str], fmt: str, request: ChRequest) -> Result:
        # Settings as URL parameters, as ReadOnlyQueries sends them (readonly=1 last).
        params = {"default_format": fmt, "query_id": request.query_id, "wait_end_of_query": "1"}
        if self.database:
            params["database"] = self.database
        if request.protocol_version:
            params["client_protocol_version"] = request.protocol_version
        params.update({f"param_{k}": v for k, v in request.params.items()})
        params.update(settings)
        try:
            resp = self.http.post(
                self.url, params=params, content=text.encode(), headers=self.headers
            )
        except httpx.HTTPError as e:
            raise ClickHouseError(209, f"ClickHouse server did not answer: {e}") from None
        if resp.status_code != 200:
            code = resp.headers.get("x-clickhouse-exception-code", "")
            err = ClickHouseError.from_engine(resp.text)
            if code.isdigit():
                err.code = int(code)
            raise err
        try:
            summary = json.loads(resp.headers.get("x-clickhouse-summary", "{}"))
        except ValueError:
            summary = {}
        passed = {k: resp.headers[k] for k in ("x-clickhouse-timezone",) if k in resp.headers}
        return Result(resp.content, resp.headers.get("x-clickhouse-format", fmt), summary, passed)

    def close(self) -> None:
        self.http.close()


@dataclass
class ServerInfo:
    """What response headers name: version, time zone, database, display name."""

    version: str
    timezone: str
    database: str
    display_name: str = field(default_factory=socket.gethostname)


class Executor:
    """Runs requests for one :class:`QueryServer`: the gate, the queue, the engine."""

    def __init__(self, server: QueryServer) -> None:
        self.server = server
        self.limits = server.limits
        self._engine: Engine | None = None
        self._info: ServerInfo | None = None
        self._lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        """chDB when the read-only client is chDB's, else its ClickHouse server."""
        with self._lock:
            if self._engine is None:
                client = self.server.client
                path = getattr(client, "path", None)
                self._engine = (
                    ChdbEngine(path) if isinstance(path, str) else HttpEngine(client, self.limits)
                )
            return self._engine

    def info(self) -> ServerInfo:
        """Asked of the engine once."""
        with self._lock:
            if self._info is None:
                row = self.server.client.query(
                    "SELECT version(), timezone(), currentDatabase()",
                    settings=self.server.queries.settings,
                ).result_rows[0]
                self._info = ServerInfo(str(row[0]), str(row[1]), str(row[2]))
            return self._info

    def run(self, sql: str, request: ChRequest) -> Result:
        """The statement's bytes; ClickHouseError if refused or failed, Busy if full."""
        info = self.info()
        if request.database not in (None, info.database):
            raise ClickHouseError(
                ACCESS_DENIED, f"only the store's database {info.database} is served here"
            )

        def work() -> Result:
            try:
                text = self.server.queries.canonical(sql, request.params)
            except NotReadOnly as e:
                if _ENGINE_CODE.search(str(e)):  # the engine's own error: its text as it is
                    raise ClickHouseError.from_engine(e) from None
                raise ClickHouseError(e.code, str(e)) from None
            fmt = statement_format(text) or request.default_format
            settings = query_settings(request.settings, self.limits)
            if "readonly" not in self.server.queries.settings:
                del settings["readonly"]  # the server's user is read-only already (readonly=2)
            return self.engine.run(text, settings, fmt, request)

        result = self.server.queued(work)
        if len(result.body) > self.limits.max_result_bytes:
            # The engine checks result bytes per block; one large block passes its check.
            raise ClickHouseError(
                TOO_MANY_ROWS_OR_BYTES,
                f"Limit for result exceeded, max bytes: {self.limits.max_result_bytes}, "
                f"current bytes: {len(result.body)}",
            )
        return result

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
