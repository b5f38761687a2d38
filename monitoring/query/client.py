"""A typed client of the store's query endpoint: PromQL and SQL for plots and reports.

:class:`StoreClient` speaks the store's two standard protocols over HTTP (httpx):

- ``query_range(expr, start, end, step)`` and ``query(expr, at)``: the Prometheus API
  (``/api/v1/query_range``, ``/api/v1/query``), answers as :class:`Series` (labels and
  numpy arrays of ``t_ms``/``values``);
- ``sql(statement, params)``: ClickHouse's HTTP interface (``POST /``, ``JSONCompact``,
  ``{name:Type}`` placeholders bound as ``param_<name>``), answered as a :class:`Table`.

Every request carries the token (``api.token``) and a timeout, for each read and for the
whole answer (a store sending a byte at a time is cut at ``timeout_s``); a response is
read as a stream and refused past ``max_response_bytes``. Prometheus's error shape
(``{"status": "error", "errorType", "error"}``) and ClickHouse's (``Code: N.
DB::Exception: ...``) become :class:`StoreError`; a store that does not answer,
:class:`StoreUnavailable`.

:func:`open_store` gives a client of the running store, or, when none answers and the
store is an embedded chDB directory, of an in-process copy of the store's query server
(the same :class:`~monitoring.sinks.clickhouse.query_server.QueryServer` and protocols,
on an ephemeral loopback port with a one-off token), so answers are the same either way.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import numpy as np
from clickhouse_connect.driver.binding import format_bind_value

from monitoring.config import Settings

DEFAULT_MAX_RESPONSE_BYTES = 64 << 20
DEFAULT_TIMEOUT_S = 40.0  # the store's query timeout (30 s) plus a margin
MAX_ERROR_CHARS = 2000  # of a store's error message kept in a StoreError

Time = datetime | float | int
"""A point in time: an aware datetime, or Unix seconds."""
Step = timedelta | float | int
"""A duration: a timedelta, or seconds."""


class StoreError(RuntimeError):
    """The store refused or failed a query; ``error_type`` is Prometheus's errorType
    (``bad_data``, ``execution``, ``timeout``, ``unavailable``) or ``clickhouse``."""

    def __init__(self, message: str, error_type: str = "execution", status: int = 0) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status


class StoreUnavailable(StoreError):
    """No store answered at the address."""

    def __init__(self, message: str) -> None:
        super().__init__(message, "unavailable", 0)


@dataclass(frozen=True)
class Series:
    """One series of an answer: labels, times (ms since the epoch) and values."""

    labels: dict[str, str]
    t_ms: np.ndarray
    values: np.ndarray

    @property
    def name(self) -> str:
        """The metric name, or ``""``."""
        return self.labels.get("__name__", "")

    def legend(self) -> str:
        """``name{a="b", ...}`` as Prometheus prints a series.

        >>> Series({"__name__": "up", "job": "x"}, np.array([]), np.array([])).legend()
        'up{job="x"}'
        """
        rest = ", ".join(f'{k}="{v}"' for k, v in sorted(self.labels.items()) if k != "__name__")
        return f"{self.name}{{{rest}}}" if rest else (self.name or "{}")


@dataclass(frozen=True)
class Table:
    """A SQL answer: column names, ClickHouse types and rows."""

    columns: list[str]
    types: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def column(self, name: str) -> list[Any]:
        """One column's values."""
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def records(self) -> list[dict[str, Any]]:
        """Rows as dicts."""
        return [dict(zip(self.columns, r, strict=True)) for r in self.rows]


def unix_s(t: Time) -> float:
    """Unix seconds of a time.

    >>> unix_s(datetime(1970, 1, 1, 0, 1, tzinfo=__import__("datetime").timezone.utc))
    60.0
    """
    if isinstance(t, datetime):
        if t.tzinfo is None:
            raise ValueError("a datetime must carry its time zone")
        return t.timestamp()
    if not math.isfinite(float(t)):
        raise ValueError(f"not a time: {t!r}")
    return float(t)


def seconds(d: Step) -> float:
    """Seconds of a duration (positive)."""
    s = d.total_seconds() if isinstance(d, timedelta) else float(d)
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"a step must be positive, not {d!r}")
    return s


class StoreClient:
    """The store's query protocols over HTTP (see the module's docstring)."""

    def __init__(
        self,
        base_url: str,
        token: str = "",
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_response_bytes = max_response_bytes
        self.timeout_s = timeout_s
        # sent with this client's requests only, never set on a pool handed in
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._own = http is None
        self.http = http or httpx.Client(timeout=httpx.Timeout(timeout_s, connect=5.0))

    def close(self) -> None:
        """Close the connection pool (when this client made it)."""
        if self._own:
            self.http.close()

    def __enter__(self) -> StoreClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- PromQL --------------------------------------------------------------------

    def query_range(self, expr: str, start: Time, end: Time, step: Step) -> list[Series]:
        """``expr`` evaluated at ``start + k*step`` up to ``end``: one Series per series."""
        data = self._prom(
            "/api/v1/query_range",
            {
                "query": expr,
                "start": f"{unix_s(start):.3f}",
                "end": f"{unix_s(end):.3f}",
                "step": f"{seconds(step):.3f}",
            },
        )
        return _series(data)

    def query(self, expr: str, at: Time | None = None) -> list[Series]:
        """``expr`` at ``at`` (default now): one point per series (a scalar is one series
        without labels)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{unix_s(at):.3f}"
        return _series(self._prom("/api/v1/query", params))

    def _prom(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        status, body = self._send("POST", path, data=params)
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise StoreError(
                f"store answered {status}: {body[:200].decode('utf-8', 'replace')}", status=status
            ) from None
        if not isinstance(doc, dict):
            raise StoreError("store answered an unexpected shape", status=status)
        if doc.get("status") != "success":
            raise StoreError(
                str(doc.get("error") or f"store answered {status}")[:MAX_ERROR_CHARS],
                str(doc.get("errorType") or "execution"),
                status,
            )
        data = doc.get("data")
        if not isinstance(data, dict):
            raise StoreError("store answered no data", status=status)
        return data

    # -- SQL -----------------------------------------------------------------------

    def sql(self, statement: str, params: Mapping[str, Any] | None = None) -> Table:
        """A read-only statement over ClickHouse's HTTP interface; ``params`` fill its
        ``{name:Type}`` placeholders (bound by the engine, never spliced). It runs in UTC
        (``session_timezone``): times given and answered are UTC, as callers assume."""
        query = {
            "default_format": "JSONCompact",
            "output_format_json_quote_64bit_integers": "0",
            # times bound and printed in UTC, whatever the store's zone (TZ of its process)
            "session_timezone": "UTC",
        }
        for k, v in (params or {}).items():
            query[f"param_{k}"] = _param_text(v)
        status, body = self._send("POST", "/", params=query, content=statement.encode())
        if status != 200:
            text = body[:MAX_ERROR_CHARS].decode("utf-8", "replace").strip()
            raise StoreError(text or f"store answered {status}", "clickhouse", status)
        try:
            doc = json.loads(body)
            meta = doc["meta"]
            return Table(
                [str(m["name"]) for m in meta], [str(m["type"]) for m in meta], list(doc["data"])
            )
        except (ValueError, KeyError, TypeError, RecursionError):
            raise StoreError("store answered SQL in an unexpected shape", status=status) from None

    # -- transport -----------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """One request; the body read up to ``max_response_bytes``."""
        url = self.base_url + path
        deadline = time.monotonic() + self.timeout_s
        try:
            with self.http.stream(method, url, headers=self._headers, **kwargs) as resp:
                length = resp.headers.get("content-length", "")
                if length.isascii() and length.isdigit() and int(length) > self.max_response_bytes:
                    raise StoreError(self._too_large(), "execution", resp.status_code)
                chunks, size = [], 0
                for chunk in resp.iter_bytes():
                    size += len(chunk)
                    if size > self.max_response_bytes:
                        raise StoreError(self._too_large(), "execution", resp.status_code)
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise httpx.ReadTimeout("the answer took longer than the timeout")
                return resp.status_code, b"".join(chunks)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise StoreUnavailable(f"no store answers at {self.base_url}: {e}") from None
        except httpx.TimeoutException:
            raise StoreError(f"store at {self.base_url} timed out", "timeout") from None
        except httpx.HTTPError as e:
            raise StoreError(f"store at {self.base_url}: {e}") from None

    def _too_large(self) -> str:
        return (
            f"the store's answer is larger than {self.max_response_bytes} bytes: "
            "narrow the query (fewer series, a longer step, a LIMIT)"
        )


def _param_text(v: Any) -> str:
    r"""A parameter value in ClickHouse's text form: times in UTC with milliseconds (an
    aware datetime converted, a naive one taken as UTC), else clickhouse-connect's
    escaping (strings escaped, list elements quoted), which the engine parses back.

    >>> _param_text(["a'b", "c"]), _param_text(True)
    ("['a\\'b', 'c']", '1')
    """
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
        return v.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    if isinstance(v, bool):
        return "1" if v else "0"
    return str(format_bind_value(v))


def _series(data: dict[str, Any]) -> list[Series]:
    """A Prometheus ``data`` object as Series."""
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list):
        try:
            return [_series_of({}, [result])]
        except (IndexError, TypeError, ValueError):
            raise StoreError("store answered a scalar in an unexpected shape") from None
    if kind == "string":
        raise StoreError("the query answered a string, not numbers", "bad_data")
    if not isinstance(result, list):
        raise StoreError("store answered an unexpected result")
    out = []
    try:
        for item in result:
            labels = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
            points = item["values"] if kind == "matrix" else [item["value"]]
            out.append(_series_of(labels, points))
    except (AttributeError, KeyError, IndexError, TypeError, ValueError):
        raise StoreError("store answered a series in an unexpected shape") from None
    return out


def _series_of(labels: dict[str, str], points: list[Any]) -> Series:
    t = np.array([round(float(p[0]) * 1000) for p in points], dtype=np.int64)
    v = np.array([float(p[1]) for p in points], dtype=np.float64)
    return Series(labels, t, v)


def store_url(settings: Settings) -> str:
    """The store's query endpoint from settings (``storage.query_host/query_port``)."""
    host = settings.storage.query_host
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.storage.query_port}"


def store_answers(url: str, timeout_s: float = 2.0) -> bool:
    """Whether a store answers ``/ping`` at ``url``."""
    try:
        return httpx.get(f"{url}/ping", timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def open_store(
    settings: Settings, url: str | None = None, fallback: bool = True
) -> Iterator[StoreClient]:
    """A client of the running store, or of an in-process query server over the chDB
    directory when no store runs (chDB lets one process open it). Without ``fallback``
    (a store named explicitly, whose data no other may stand in for; a daemon, which must
    not hold the directory while the store restarts), a store that does not answer is
    :class:`StoreUnavailable`."""
    url = url or store_url(settings)
    st = settings.storage
    timeout = 2 * st.query.timeout.total_seconds() + 5  # a query slot, then the query
    if store_answers(url):
        with StoreClient(url, settings.api.token.get_secret_value(), timeout) as client:
            yield client
        return
    if not fallback:
        raise StoreUnavailable(f"no store answers at {url}")
    with local_store(settings) as client:
        yield client


@contextmanager
def local_store(settings: Settings) -> Iterator[StoreClient]:
    """The store's query server in this process over ``storage.dsn`` (see the module)."""
    from prometheus_client import CollectorRegistry

    from monitoring.api.guard import Guard
    from monitoring.query import clickhouse_http, prometheus_api
    from monitoring.sinks.clickhouse.connection import (
        StoreLocked,
        chdb_path,
        connect_read_only,
    )
    from monitoring.sinks.clickhouse.query_server import QueryServer

    st = settings.storage
    path = chdb_path(st.dsn)
    if path is not None and not (path / "metadata").exists():
        raise StoreUnavailable(f"no data at {path} yet: start `monitoring store run`")
    try:
        reader = connect_read_only(st.query_dsn or st.dsn, st.query)
    except StoreLocked as e:
        raise StoreUnavailable(
            f"{e}; its query endpoint {store_url(settings)} did not answer"
        ) from None
    token = secrets.token_urlsafe(24)
    server = QueryServer(
        reader,
        CollectorRegistry(),
        "127.0.0.1",
        0,
        limits=st.query,
        guard=Guard.for_bind("127.0.0.1", token=token),
        protocols=[clickhouse_http.routes, prometheus_api.routes],
    )
    try:
        server.start()
        host, port = server.address
        timeout = 2 * st.query.timeout.total_seconds() + 5
        with StoreClient(f"http://{host}:{port}", token, timeout) as client:
            yield client
    finally:
        server.stop()
        reader.close()
