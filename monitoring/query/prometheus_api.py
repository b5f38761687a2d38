"""The Prometheus HTTP API (``/api/v1/...``) on the store's port, as Prometheus 2.42
answers it (``promtool query ...`` and Grafana's Prometheus data source are its clients).

``query``, ``query_range``, ``series``, ``labels``, ``label/<name>/values``,
``metadata`` and ``status/buildinfo``; GET with URL parameters or POST with a
form-encoded body (both merged, the body first, as Go's ``FormValue``). Queries run
:class:`~monitoring.promql.Engine` over a :class:`~monitoring.query.source.StoreSource`
in a worker thread through the store's bounded queue (``QueryServer.queued``), with
``timeout`` capped by ``storage.query.timeout``. Errors answer Prometheus's shape:
400 ``bad_data``, 422 ``execution``, 503 ``timeout`` (and 503 ``unavailable`` when the
queue is full). See docs/query.md.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import re2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from monitoring.metrics.prom_syntax import LABEL_NAME, format_value
from monitoring.promql import (
    BadQuery,
    Engine,
    Matcher,
    PromQLError,
    Result,
    TooLarge,
    parse,
)
from monitoring.promql.plan import VectorSel
from monitoring.query.prom_format import (
    MAX_TIME_MS,
    MIN_TIME_MS,
    BadParam,
    envelope,
    error_body,
    format_ts,
    go_float,
    grid_json,
    grid_pays,
    matrix_json,
    parse_duration,
    parse_time,
    vector_json,
)
from monitoring.query.source import StoreSource, clamp_ms, raw_retention_ms

if TYPE_CHECKING:
    from monitoring.sinks.clickhouse.query_server import QueryServer

# The Prometheus release whose API (and PromQL) this follows: the Debian package the
# oracle test compares against. Clients gate features on it.
PROMETHEUS_VERSION = "2.42.0"
MAX_POINTS = 11_000  # per series of a range query, as Prometheus
MAX_SERIES = 10_000  # selected by one selector (or one series/labels request)
MAX_SAMPLES = 50_000_000  # loaded by one query (Prometheus's --query.max-samples)
STATUS = {"bad_data": 400, "execution": 422, "timeout": 503, "unavailable": 503}
KINDS = {
    "COUNTER": "counter",
    "GAUGE": "gauge",
    "HISTOGRAM_BUCKET": "histogram",
    "SUMMARY": "summary",
    "UNTYPED": "unknown",
}

Params = dict[str, list[str]]


class ApiError(Exception):
    """An answer in Prometheus's error shape."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type


def success(data: Any, warnings: list[str] | None = None) -> dict[str, Any]:
    """The API's success envelope."""
    out: dict[str, Any] = {"status": "success", "data": data}
    if warnings:
        out["warnings"] = warnings
    return out


def _one(params: Params, name: str) -> str:
    values = params.get(name)
    return values[0] if values else ""


async def _params(server: QueryServer, request: Request) -> Params:
    """URL and form parameters, the form's first (Go's ``Request.FormValue``)."""
    out: Params = {}
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        body = await server.server.guard.body(request, json=False)
        if ctype == "application/x-www-form-urlencoded":
            for k, v in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                out.setdefault(k, []).append(v)
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


def _matcher_sets(params: Params, required: bool) -> list[list[Matcher]]:
    given = params.get("match[]", [])
    if required and not given:
        raise ApiError("bad_data", "no match[] parameter provided")
    sets = []
    for text in given:
        try:
            node = parse(text)
        except PromQLError as e:
            raise ApiError("bad_data", f'invalid parameter "match[]": {e}') from None
        if not isinstance(node, VectorSel) or node.offset_ms or node.at is not None:
            raise ApiError(
                "bad_data", f'invalid parameter "match[]": {text!r} is not a series selector'
            )
        matchers = list(node.matchers)
        if all(_matches_empty(m) for m in matchers):
            raise ApiError("bad_data", "match[] must contain at least one non-empty matcher")
        sets.append(matchers)
    return sets


def _matches_empty(m: Matcher) -> bool:
    if m.op == "=":
        return m.value == ""
    if m.op == "!=":
        return m.value != ""
    try:  # RE2 as the store matches it (linear time; Python's re can backtrack for hours)
        hit = re2.fullmatch(m.value, "") is not None
    except re2.error:
        return False
    return hit if m.op == "=~" else not hit


def _time_param(params: Params, name: str, default: int) -> int:
    """An optional time (Prometheus's ``parseTimeParam``, its own error text)."""
    text = _one(params, name)
    if not text:
        return default
    try:
        return parse_time(text, name)
    except BadParam as e:
        reason = str(e).split(": ", 1)[1]
        raise BadParam(
            f"invalid parameter \"{name}\": Invalid time value for '{name}': {reason}"
        ) from None


def routes(server: QueryServer) -> list[BaseRoute]:
    """The API's routes on ``server``."""
    retention: list[int] = []

    def settings(timeout_s: float) -> dict[str, Any]:
        s = dict(server.queries.settings)  # limits first, readonly=1 last
        s["max_execution_time"] = max(1, math.ceil(timeout_s))
        return s

    def limit_s() -> float:
        return server.limits.timeout.total_seconds()

    def timeout_s(params: Params) -> float:
        text = _one(params, "timeout")
        if not text:
            return limit_s()
        seconds = go_float(text)  # seconds, below the millisecond too
        asked = parse_duration(text, "timeout") / 1000 if seconds is None else seconds
        if not math.isfinite(asked):
            asked = parse_duration(text, "timeout") / 1000  # Prometheus's error text
        return min(max(asked, 1e-9), limit_s())

    def resolution_ms(params: Params) -> int:
        """``max_source_resolution`` (Thanos's parameter): aggregate windows up to this
        long may answer instead of raw samples; ``raw``, ``0s`` or absent: the step decides."""
        text = _one(params, "max_source_resolution")
        if not text or text == "raw":
            return 0
        ms = parse_duration(text, "max_source_resolution")
        if ms < 0:
            raise BadParam('invalid parameter "max_source_resolution": negative duration')
        return ms

    def source(timeout: float, step_ms: int = 0, resolution: int = 0) -> StoreSource:
        if not retention:
            retention.append(raw_retention_ms(server.client, settings(timeout)))
        return StoreSource(
            server.client,
            settings(timeout),
            step_ms=step_ms,
            raw_retention_ms=retention[0],
            max_series=MAX_SERIES,
            max_samples=MAX_SAMPLES,
            max_resolution_ms=resolution,
        )

    def run_query(params: Params, ranged: bool) -> str:
        query = _one(params, "query")
        timeout = timeout_s(params)
        fmt = _one(params, "format")
        if fmt not in ("", "grid") or (fmt and not ranged):
            raise BadParam(
                'invalid parameter "format": query_range knows "grid" (values on the '
                "query's grid), query nothing"
            )
        engine = Engine(
            max_series=MAX_SERIES,
            max_points=MAX_POINTS + 1,  # the API checks Prometheus's own way, below
            max_samples=MAX_SAMPLES,
            timeout_s=timeout,
        )
        if ranged:
            start = parse_time(_one(params, "start"), "start")
            end = parse_time(_one(params, "end"), "end")
            if end < start:
                raise BadParam(
                    'invalid parameter "end": end timestamp must not be before start time'
                )
            step = parse_duration(_one(params, "step"), "step")
            if step <= 0:
                raise BadParam(
                    'invalid parameter "step": zero or negative query resolution step '
                    "widths are not accepted. Try a positive integer"
                )
            if (end - start) // step > MAX_POINTS:
                raise BadParam(
                    "exceeded maximum resolution of 11,000 points per timeseries. "
                    "Try decreasing the query resolution (?step=XX)"
                )
            src = source(timeout, step, resolution_ms(params))
            result = server.queued(lambda: engine.range(src, query, start, end, step))
            if (
                fmt == "grid"
                and result.type == "matrix"
                and grid_pays(result.series, start, step, end)
            ):
                data = grid_json(result.series, start, step, end)
                return envelope(data, [*result.warnings, *src.warnings])
        else:
            at = _time_param(params, "time", int(time.time() * 1000))
            src = source(timeout, 0, resolution_ms(params))
            result = server.queued(lambda: engine.instant(src, query, at))
        return envelope(_result_json(result), [*result.warnings, *src.warnings])

    def run_series(params: Params) -> Any:
        sets = _matcher_sets(params, required=True)
        start = _time_param(params, "start", MIN_TIME_MS)
        end = _time_param(params, "end", MAX_TIME_MS)
        return sorted(_matched(sets, start, end).values(), key=lambda ls: sorted(ls.items()))

    def _matched(sets: list[list[Matcher]], start: int, end: int) -> dict[int, dict[str, str]]:
        src = source(limit_s())

        def select() -> dict[int, dict[str, str]]:
            found: dict[int, dict[str, str]] = {}
            for matchers in sets:
                found |= src.series(matchers, start, end)
                if len(found) > MAX_SERIES:
                    raise TooLarge(f"the match[] selectors select more than {MAX_SERIES} series")
            return found

        return server.queued(select)

    def run_labels(params: Params) -> Any:
        sets = _matcher_sets(params, required=False)
        start = _time_param(params, "start", MIN_TIME_MS)
        end = _time_param(params, "end", MAX_TIME_MS)
        if sets:
            return sorted({k for ls in _matched(sets, start, end).values() for k in ls})
        rows = _sql(
            "SELECT DISTINCT arrayJoin(arrayConcat(['__name__'], "
            "mapKeys(mapFilter((k, v) -> v != '', l)))) "
            f"FROM (SELECT any(labels) AS l FROM series GROUP BY series_id {_SEEN})",
            {"lo": start, "hi": end},
        )
        return sorted(str(r[0]) for r in rows)

    def run_values(name: str, params: Params) -> Any:
        if not LABEL_NAME.match(name):
            raise ApiError("bad_data", f'invalid label name: "{name}"')
        sets = _matcher_sets(params, required=False)
        start = _time_param(params, "start", MIN_TIME_MS)
        end = _time_param(params, "end", MAX_TIME_MS)
        if sets:
            found = _matched(sets, start, end).values()
            return sorted({ls[name] for ls in found if ls.get(name)})
        column = "any(name)" if name == "__name__" else "any(labels)[{name:String}]"
        rows = _sql(
            f"SELECT DISTINCT v FROM (SELECT {column} AS v FROM series "
            f"GROUP BY series_id {_SEEN}) WHERE v != ''",
            {"lo": start, "hi": end, "name": name},
        )
        return sorted(str(r[0]) for r in rows)

    def run_metadata(params: Params) -> Any:
        text = _one(params, "limit")
        try:
            limit = int(text) if text else -1
        except ValueError:
            raise ApiError("bad_data", "limit must be a number") from None
        metric = _one(params, "metric")
        rows = _sql(
            "SELECT name, anyLast(kind), anyLast(unit) FROM series "
            + ("WHERE name = {metric:String} " if metric else "")
            + "GROUP BY name ORDER BY name",
            {"metric": metric},
        )
        out: dict[str, list[dict[str, str]]] = {}
        for name, kind, unit in rows:
            family = str(name)
            if kind == "HISTOGRAM_BUCKET" and family.endswith("_bucket"):
                family = family[: -len("_bucket")]
            entry = {"type": KINDS.get(str(kind), "unknown"), "help": "", "unit": str(unit)}
            if limit >= 0 and len(out) >= limit and family not in out:
                break
            if entry not in out.setdefault(family, []):
                out[family].append(entry)
        return out

    def _sql(sql: str, params: dict[str, Any]) -> list[Any]:
        bound = {k: clamp_ms(v) if k in ("lo", "hi") else v for k, v in params.items()}
        result = server.queued(
            lambda: server.client.query(sql, parameters=bound, settings=settings(limit_s()))
        )
        return list(result.result_rows)

    async def buildinfo(_request: Request) -> Response:
        return JSONResponse(
            success(
                {
                    "version": PROMETHEUS_VERSION,
                    "revision": f"monitoring-{version('monitoring')}",
                    "branch": "",
                    "buildUser": "",
                    "buildDate": "",
                    "goVersion": "",
                }
            )
        )

    def endpoint(fn: Callable[[Params], Any], raw: bool = False) -> Callable[..., Any]:
        async def handle(request: Request) -> Response:
            params = await _params(server, request)
            return await run_in_threadpool(_answer, fn, params, raw)

        return handle

    async def values(request: Request) -> Response:
        name = request.path_params["name"]
        params = await _params(server, request)
        return await run_in_threadpool(_answer, lambda p: run_values(name, p), params, False)

    both = ["GET", "POST"]
    return [
        Route("/api/v1/status/buildinfo", buildinfo, methods=["GET"]),
        Route("/api/v1/query", endpoint(lambda p: run_query(p, False), True), methods=both),
        Route("/api/v1/query_range", endpoint(lambda p: run_query(p, True), True), methods=both),
        Route("/api/v1/series", endpoint(run_series), methods=both),
        Route("/api/v1/labels", endpoint(run_labels), methods=both),
        Route("/api/v1/label/{name}/values", values, methods=["GET"]),
        Route("/api/v1/metadata", endpoint(run_metadata), methods=["GET"]),
    ]


# series seen in [lo, hi] (series.last_seen lags a live series: see source.py)
_SEEN = (
    "HAVING max(last_seen) >= fromUnixTimestamp64Milli({lo:Int64}) - INTERVAL 1 HOUR "
    "AND min(first_seen) <= fromUnixTimestamp64Milli({hi:Int64})"
)


def _result_json(result: Result) -> str:
    if result.type == "matrix":
        body = matrix_json(result.series)
    elif result.type == "vector":
        body = vector_json(result.series)
    elif result.type == "string":
        t, text = result.string if result.string is not None else (0, "")
        body = f"[{format_ts(t)},{json.dumps(text)}]"
    else:
        t, v = result.scalar if result.scalar is not None else (0, math.nan)
        body = f'[{format_ts(t)},"{format_value(v)}"]'
    return f'{{"resultType":"{result.type}","result":{body}}}'


def _answer(fn: Callable[[Params], Any], params: Params, raw: bool) -> Response:
    """``fn(params)`` as a response: JSON text when ``raw``, else data to wrap."""
    from monitoring.sinks.clickhouse.query_server import Busy

    try:
        out = fn(params)
    except BadParam as e:
        return _error("bad_data", str(e))
    except ApiError as e:
        return _error(e.error_type, str(e))
    except BadQuery as e:
        return _error("bad_data", f'invalid parameter "query": {_with_position(e)}')
    except PromQLError as e:
        return _error(e.error_type, str(e))
    except Busy as e:
        return _error("unavailable", str(e))
    except Exception as e:
        return _error(*_engine_error(e))
    if raw:
        return Response(out, media_type="application/json")
    return JSONResponse(success(out))


def _engine_error(e: Exception) -> tuple[str, str]:
    """A ClickHouse failure as an error type and message (regexes run in its RE2)."""
    text = str(e).strip().split("\n")[0][:1000]
    if "cannot compile re2" in text:
        return "bad_data", f"invalid regular expression in a matcher: {text}"
    if "TIMEOUT_EXCEEDED" in text or "Timeout exceeded" in text:
        return "timeout", f"query timed out in the store: {text}"
    return "execution", text


def _with_position(e: BadQuery) -> str:
    text = str(e)
    position = getattr(e, "position", None)
    if position is None or text[:1].isdigit():
        return text
    return f"1:{int(position) + 1}: parse error: {text}"


def _error(error_type: str, message: str) -> Response:
    return JSONResponse(error_body(error_type, message), status_code=STATUS.get(error_type, 422))
