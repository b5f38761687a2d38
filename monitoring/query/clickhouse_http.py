"""ClickHouse's HTTP interface on the store's port, as a ClickHouse server answers it.

- ``GET /ping`` answers ``Ok.``; ``GET /`` without a query too.
- ``GET /?query=...``, ``POST /`` with the statement in the body (or in ``query``, with
  the body appended to it), a ``FORMAT`` clause or ``default_format``, ``database``,
  ``param_<name>`` for ``{name:Type}`` placeholders (bound by the engine, never spliced),
  ``query_id``; settings as :mod:`.clickhouse_exec` allows them.
- The answer is the engine's own bytes in the format asked for, with the headers a
  server sends (``X-ClickHouse-Format``, ``-Summary``, ``-Query-Id``, ``-Timezone``,
  ``-Server-Display-Name``), compressed when the client asks (``Accept-Encoding``: gzip,
  deflate, lz4, zstd; ``enable_http_compression=0`` turns it off). A compressed request
  body (``Content-Encoding``) is inflated within the guard's body limit.
- Errors are ``Code: N. DB::Exception: ...`` with ``X-ClickHouse-Exception-Code`` and
  the HTTP status a server gives that code.

Every statement goes through the store's read-only gate and its bounded query queue.
"""

from __future__ import annotations

import gzip
import importlib
import json
import zlib
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from monitoring.api.guard import Refused
from monitoring.query.clickhouse_exec import (
    SYNTAX_ERROR,
    TOO_MANY_SIMULTANEOUS_QUERIES,
    ClickHouseError,
    Executor,
    Result,
    parse_request,
)

if TYPE_CHECKING:
    from monitoring.sinks.clickhouse.query_server import QueryServer


def _load_zstd() -> Any:
    """Python 3.14's compression.zstd, or its backport (clickhouse-connect's choice)."""
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


_zstd = _load_zstd()
try:
    import lz4.frame as _lz4
except ImportError:  # pragma: no cover - lz4 comes with clickhouse-connect's extras
    _lz4 = None

ENCODINGS = tuple(
    e for e, ok in (("gzip", True), ("deflate", True), ("lz4", _lz4), ("zstd", _zstd)) if ok
)
_BINARY = ("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "MsgPack", "Protobuf",
           "CapnProto", "BSONEachRow", "Npy", "One")  # fmt: skip


def content_type(fmt: str) -> str:
    """The Content-Type a ClickHouse server gives ``fmt``'s output.

    >>> content_type("CSVWithNames"), content_type("Parquet")
    ('text/csv; charset=UTF-8; header=present', 'application/octet-stream')
    >>> content_type("TSV")
    'text/tab-separated-values; charset=UTF-8'
    """
    if fmt.startswith(_BINARY):
        return "application/octet-stream"
    if fmt.startswith("JSON") or fmt == "NDJSON":
        return "application/json; charset=UTF-8"
    if fmt.startswith(("TabSeparated", "TSV")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        header = "present" if "WithNames" in fmt else "absent"
        return f"text/csv; charset=UTF-8; header={header}"
    if fmt == "XML":
        return "application/xml; charset=UTF-8"
    if fmt == "Markdown":
        return "text/markdown; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def choose_encoding(accept: str) -> str | None:
    """The first encoding of an Accept-Encoding header that this server can produce.

    >>> choose_encoding("lz4,zstd,br,gzip,deflate"), choose_encoding("br"), choose_encoding("")
    ('lz4', None, None)
    >>> choose_encoding("gzip;q=0, deflate")
    'deflate'
    """
    for part in accept.split(","):
        name, _, q = part.strip().partition(";")
        if q.strip().replace(" ", "") in ("q=0", "q=0.0"):
            continue
        if name.strip().lower() in ENCODINGS:
            return name.strip().lower()
    return None


def compress(data: bytes, encoding: str) -> bytes:
    """``data`` encoded as ``encoding`` (one of :data:`ENCODINGS`)."""
    if encoding == "gzip":
        return gzip.compress(data, compresslevel=3)
    if encoding == "deflate":
        return zlib.compress(data, 3)
    if encoding == "lz4":
        return bytes(_lz4.compress(data))
    return bytes(_zstd.compress(data))


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """A request body's ``Content-Encoding`` undone, at most ``limit`` bytes of it.

    >>> decompress(gzip.compress(b"SELECT 1"), "gzip", 100)
    b'SELECT 1'
    """
    encoding = encoding.strip().lower()
    try:
        if encoding in ("", "identity"):
            out = data
        elif encoding in ("gzip", "deflate"):
            d = zlib.decompressobj(31 if encoding == "gzip" else 15)
            out = d.decompress(data, limit + 1)
        elif encoding == "lz4" and _lz4 is not None:
            out = _lz4.LZ4FrameDecompressor().decompress(data, max_length=limit + 1)
        elif encoding == "zstd" and _zstd is not None:
            out = _zstd.ZstdDecompressor().decompress(data, max_length=limit + 1)
        else:
            raise ClickHouseError(89, f"Unknown compression method {encoding!r}")
    except (zlib.error, RuntimeError, ValueError, EOFError) as e:
        raise ClickHouseError(271, f"cannot decompress the request body: {e}") from None
    if len(out) > limit:
        raise ClickHouseError(229, f"request body over {limit} bytes once decompressed")
    return bytes(out)


class ClickHouseHttp:
    """The interface's endpoint over one :class:`QueryServer`."""

    def __init__(self, server: QueryServer) -> None:
        self.server = server
        self.executor = Executor(server)

    def _version(self) -> str:
        try:
            return self.executor.info().version
        except Exception:
            return "unknown"

    def error(self, e: ClickHouseError, query_id: str = "") -> Response:
        headers = {"X-ClickHouse-Exception-Code": str(e.code)}
        if query_id:
            headers["X-ClickHouse-Query-Id"] = query_id
        return PlainTextResponse(e.text(self._version()), e.status, headers=headers)

    async def root(self, request: Request) -> Response:
        """``/``: a query in the URL or the body, or ``Ok.`` without one."""
        from monitoring.sinks.clickhouse.query_server import Busy

        outcomes = self.server.outcomes
        guard = self.server.server.guard
        items = list(request.query_params.multi_items())
        query_id = ""
        try:
            body = b""
            if request.method == "POST":
                try:
                    raw = await guard.body(request, json=False)
                except Refused as e:
                    code = 229 if e.status == 413 else 209 if e.status == 408 else 36
                    raise ClickHouseError(code, e.message) from None
                body = decompress(
                    raw, request.headers.get("content-encoding", ""), guard.max_body_bytes
                )
            in_url = request.query_params.get("query", "")
            try:
                text = body.decode()
            except UnicodeDecodeError:
                raise ClickHouseError(SYNTAX_ERROR, "the query is not valid UTF-8") from None
            sql = "\n".join(s for s in (in_url, text) if s)
            if not sql.strip():
                if request.method in ("GET", "HEAD"):
                    return PlainTextResponse("Ok.\n")
                raise ClickHouseError(SYNTAX_ERROR, "Empty query")
            req = parse_request(items, self.server.limits)
            query_id = req.query_id
            encoding = None
            if request.query_params.get("enable_http_compression", "1") != "0":
                encoding = choose_encoding(request.headers.get("accept-encoding", ""))
            result, payload = await run_in_threadpool(self._run, sql, req, encoding)
        except ClickHouseError as e:
            outcomes.labels("refused" if e.code in (164, 497, 229) else "failed").inc()
            return self.error(e, query_id)
        except Busy as e:
            outcomes.labels("busy").inc()
            return self.error(ClickHouseError(TOO_MANY_SIMULTANEOUS_QUERIES, str(e)), query_id)
        outcomes.labels("ok").inc()
        info = self.executor.info()
        headers = {
            "X-ClickHouse-Format": result.fmt,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": result.headers.get("x-clickhouse-timezone", info.timezone),
            "X-ClickHouse-Server-Display-Name": info.display_name,
            "X-ClickHouse-Summary": json.dumps(result.summary, separators=(",", ":")),
        }
        if encoding:
            headers["Content-Encoding"] = encoding
        if request.method == "HEAD":
            payload = b""
        return Response(payload, 200, headers=headers, media_type=content_type(result.fmt))

    def _run(self, sql: str, req: Any, encoding: str | None) -> tuple[Result, bytes]:
        result = self.executor.run(sql, req)
        return result, compress(result.body, encoding) if encoding else result.body


def routes(server: QueryServer) -> list[BaseRoute]:
    """The interface's routes on ``server``."""
    endpoint = ClickHouseHttp(server)

    async def ping(_request: Request) -> Response:
        return PlainTextResponse("Ok.\n")

    return [
        Route("/ping", ping, methods=["GET", "HEAD"]),
        Route("/", endpoint.root, methods=["GET", "POST", "HEAD"]),
    ]
