"""The dashboards web app's routes (served by :mod:`monitoring.ui.server`).

Routes (all behind the :class:`Guard`; JSON bodies want ``application/json``):

- ``GET /`` the home page, ``GET /d/<name>`` a dashboard page, ``GET /static/<file>``
  the page's scripts and styles, and ``/static/plotly.min.js`` from the installed
  ``plotly`` package (nothing comes from a CDN);
- ``GET /api/ui/dashboards`` the list, ``POST`` one new (``{"name", "dashboard"}``);
  ``GET``/``PUT /api/ui/dashboards/<name>`` one, saved as ``<dashboards_dir>/<name>.yaml``;
- ``GET /api/ui/dashboards/<name>/panels/<id>?start=&end=&width=&var-<v>=`` a panel's
  data, ``.../variables/<v>?start=&end=`` a variable's values;
- ``GET /api/ui/dashboards/<name>/grafana`` the dashboard as Grafana's dashboard JSON;
- ``GET /api/ui/home`` firing alerts and the pipeline's health;
- ``GET /api/ui/events`` server-sent events: ``window`` with the newest closed window's
  end whenever it moves (one store poll per ``ui.live_poll``, shared by every client).
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import orjson
from prometheus_client import CollectorRegistry, Counter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from monitoring.alerts.model import fingerprint
from monitoring.api.guard import Guard, Refused
from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.query.alert_state import ACKED_INCIDENTS, PENDING_RUNS
from monitoring.reports.kept import NoReport, open_report
from monitoring.ui.dashboards import (
    Dashboard,
    DashboardError,
    DashboardStore,
    Panel,
    Variable,
    check_name,
    from_data,
)
from monitoring.ui.export import (
    IMAGE_FORMATS,
    MAX_PANELS,
    MEDIA,
    ExportError,
    dashboard_image,
    panel_image,
    panel_parquet,
)
from monitoring.ui.grafana import to_grafana
from monitoring.ui.panels import (
    ALL,
    MAX_TIME_MS,
    MAX_WIDTH_PX,
    MIN_WIDTH_PX,
    PanelError,
    choose_step,
    first_point,
    heatmap,
    prom_frames,
    sql_frames,
    sql_parameters,
    substitute,
    time_ms,
)
from monitoring.ui.store import StoreClient, StoreError

log = get_logger("ui")
STATIC_DIR = Path(__file__).resolve().parent / "static"
_INT = re.compile(r"-?[0-9]{1,19}")
STREAM_S = 600.0  # a live stream's length; the browser reconnects
INSTANT_TYPES = frozenset({"stat", "gauge", "bar", "table"})
MAX_VALUES = 1000  # values of one template variable
MAX_ANNOTATIONS = 500  # events of one annotation over a range
# From this step on a range query lets the store answer from its aggregate windows up
# to half the step (max_source_resolution): a 24 h panel at 2 min reads 1 min windows,
# a gauge's value is then at most half a pixel old; shorter steps read raw samples
MIN_WINDOWED_STEP_S = 60
MAX_BANDS = 500  # alert incidents drawn over a range (and as many pending runs)
REPORT_CHUNK = 256 * 1024  # a report is streamed: a request holds one chunk
PENDING_STEP_MS = 10_000  # a pending run of one sample, still pending, is drawn this wide
MAX_EXPORTS = 4  # exports in the making at once (more: 503); rendering is CPU-bound
EXPORT_THREADS = 2  # of them drawing at once
FIRING_SQL = """
SELECT group_key, receiver, last_change, alerts
FROM (
    SELECT group_key, argMax(status, time) AS status, argMax(receiver, time) AS receiver,
           toUnixTimestamp64Milli(max(time)) AS last_change,
           argMax(length(fingerprints), time) AS alerts
    FROM deliveries FINAL WHERE time > now() - INTERVAL 7 DAY GROUP BY group_key
) WHERE status = 'firing' ORDER BY last_change DESC LIMIT 50
"""
FRESHNESS_SQL = """
SELECT
  (SELECT toUnixTimestamp64Milli(max(window_end)) FROM aggregates
   WHERE window_start > now() - INTERVAL 1 DAY) AS last_window_ms,
  (SELECT toUnixTimestamp64Milli(max(ts)) FROM samples WHERE ts > now() - INTERVAL 1 DAY)
    AS last_sample_ms,
  (SELECT count() FROM samples WHERE ts > now() - INTERVAL 5 MINUTE) AS samples_5m,
  (SELECT count() FROM series) AS series
"""
# windows ending in the future (a producer ahead of the clock, within
# aggregation.max_future_skew) must not hold the newest end still for that long
LIVE_SQL = (
    "SELECT toUnixTimestamp64Milli(max(window_end)) AS end_ms FROM aggregates "
    "WHERE window_start > now() - INTERVAL 1 HOUR AND window_end <= now64(3)"
)


class LiveFeed:
    """The newest closed window's end, asked of the store at most once per ``poll_s``
    however many browsers listen."""

    def __init__(self, store: StoreClient, poll_s: float) -> None:
        self.store = store
        self.poll_s = poll_s
        self.value: int | None = None
        self.at = 0.0
        self.closed = False

    async def latest(self) -> int | None:
        now = time.monotonic()
        if now - self.at >= self.poll_s:
            self.at = now  # taken before the await: concurrent callers use the old value
            try:
                _, rows = await self.store.sql(LIVE_SQL, {}, 1)
                v = rows[0][0] if rows and rows[0] else None
                self.value = int(v) if isinstance(v, int | float) and v > 0 else self.value
            except StoreError:
                pass  # the store is down: no event; the page shows the error on refetch
        return self.value


class UiApp:
    """The routes of the UI, given its settings, dashboards and store client."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        store: StoreClient,
        dashboards: DashboardStore,
    ) -> None:
        self.ui = settings.ui
        self.reports_dir = Path(settings.reporting.out_dir)
        self.store = store
        self.dashboards = dashboards
        self.feed = LiveFeed(store, self.ui.live_poll.total_seconds())
        self.live_clients = 0
        self.refused = Counter(
            "monitoring_ui_refused", "UI requests refused, by reason", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.panel_queries = Counter(
            "monitoring_ui_panel_queries", "Panel queries by outcome", ["outcome"],
            registry=registry,
        )  # fmt: skip
        self.static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
        self.exports = 0  # exports being made (each renders in a worker thread)
        self.export_threads = anyio.CapacityLimiter(EXPORT_THREADS)
        plotly_js = _plotly_js()
        self.plotly_js = _Asset(plotly_js) if plotly_js is not None else None

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/", self.page("index.html"), methods=["GET"]),
            Route("/d/{name}", self.page("dashboard.html"), methods=["GET"]),
            Route("/static/{file}", self.static_file, methods=["GET"]),
            Route("/reports/{file}", self.report_file, methods=["GET"]),
            Route("/api/ui/dashboards", self.list_dashboards, methods=["GET"]),
            Route("/api/ui/dashboards", self.create_dashboard, methods=["POST"]),
            Route("/api/ui/dashboards/{name}", self.get_dashboard, methods=["GET"]),
            Route("/api/ui/dashboards/{name}", self.put_dashboard, methods=["PUT"]),
            Route("/api/ui/dashboards/{name}/panels/{panel}", self.panel, methods=["GET"]),
            Route(
                "/api/ui/dashboards/{name}/panels/{panel}/export",
                self.export_panel,
                methods=["GET"],
            ),
            Route("/api/ui/dashboards/{name}/export", self.export_dashboard, methods=["GET"]),
            Route("/api/ui/dashboards/{name}/variables/{var}", self.variable, methods=["GET"]),
            Route("/api/ui/dashboards/{name}/annotations", self.annotations, methods=["GET"]),
            Route("/api/ui/dashboards/{name}/grafana", self.grafana, methods=["GET"]),
            Route("/api/ui/alert-bands", self.alert_bands, methods=["GET"]),
            Route("/api/ui/home", self.home, methods=["GET"]),
            Route("/api/ui/events", self.events, methods=["GET"]),
        ]

    # -- pages and files ---------------------------------------------------------------

    def page(self, file: str) -> Any:
        async def endpoint(_request: Request) -> Response:
            return FileResponse(self.static[file], media_type="text/html; charset=utf-8",
                                headers={"Cache-Control": "no-store"})  # fmt: skip

        return endpoint

    async def static_file(self, request: Request) -> Response:
        name = request.path_params["file"]
        if name == "plotly.min.js" and self.plotly_js is not None:
            return await self.plotly_js.response(request)
        path = self.static.get(name)  # only the files shipped in the package's static/
        if path is None or path.suffix not in (".js", ".css"):
            return self._refuse(404, "not-found", f"no static file {name[:100]!r}")
        media = "text/javascript" if path.suffix == ".js" else "text/css"
        return FileResponse(path, media_type=media, headers={"Cache-Control": "no-cache"})

    async def report_file(self, request: Request) -> Response:
        """A scheduled report kept in ``reporting.out_dir`` (its Slack message's link)."""
        name = request.path_params["file"]
        try:
            f, size, media = await anyio.to_thread.run_sync(open_report, self.reports_dir, name)
        except NoReport:
            return self._refuse(404, "not-found", f"no report {name[:100]!r}")
        headers = {
            "Content-Disposition": f'inline; filename="{name}"',
            "Cache-Control": "no-store",
            "Content-Length": str(size),
        }
        if media.startswith("text/html"):
            # a unique origin: nothing in a report (a user's template) acts as the UI
            headers["Content-Security-Policy"] = "sandbox"
        return StreamingResponse(_chunks(f, size), media_type=media, headers=headers)

    # -- dashboards --------------------------------------------------------------------

    async def list_dashboards(self, _request: Request) -> Response:
        return _Json({"dashboards": self.dashboards.listing()})

    async def get_dashboard(self, request: Request) -> Response:
        try:
            d = self._dashboard(request.path_params["name"])
        except _Refusal as r:
            return r.response
        return _Json({"name": request.path_params["name"], "dashboard": d.to_json(),
                             "refresh_default": self.ui.refresh.total_seconds()})  # fmt: skip

    async def create_dashboard(self, request: Request) -> Response:
        try:
            body = json.loads(await _guard(request).body(request))
        except Refused as e:
            return e.response()
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return self._refuse(400, "bad-body", "the body is not JSON (or nested too deep)")
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return self._refuse(400, "bad-body", 'the body is {"name": ..., "dashboard": {...}}')
        return await self._save(body["name"], body.get("dashboard"), create=True)

    async def put_dashboard(self, request: Request) -> Response:
        try:
            body = json.loads(await _guard(request).body(request))
        except Refused as e:
            return e.response()
        except (ValueError, RecursionError):  # RecursionError: nested too deep
            return self._refuse(400, "bad-body", "the body is not JSON (or nested too deep)")
        return await self._save(request.path_params["name"], body, create=False)

    async def grafana(self, request: Request) -> Response:
        """The dashboard as Grafana's dashboard JSON, as a file to download."""
        name = request.path_params["name"]
        try:
            d = self._dashboard(name)
        except _Refusal as r:
            return r.response
        return _Json(to_grafana(name, d), headers={
            "Content-Disposition": f'attachment; filename="{name}.grafana.json"'})  # fmt: skip

    async def _save(self, name: str, data: Any, create: bool) -> Response:
        try:
            check_name(name)
            dashboard = from_data(data, name)
            if create and name in self.dashboards.names():
                return self._refuse(409, "exists", f"a dashboard {name!r} exists: PUT to change it")
            self.dashboards.save(name, dashboard)
        except DashboardError as e:
            return self._refuse(400, "bad-dashboard", str(e))
        return _Json({"name": name, "dashboard": dashboard.to_json()},
                            status_code=201 if create else 200)  # fmt: skip

    def _dashboard(self, name: str) -> Dashboard:
        try:
            d = self.dashboards.get(name)
        except DashboardError as e:
            raise _Refusal(self._refuse(400, "bad-dashboard", str(e))) from None
        if d is None:
            raise _Refusal(self._refuse(404, "not-found", f"no dashboard {name!r}"))
        return d

    # -- panel data --------------------------------------------------------------------

    def _panel_request(
        self, request: Request, default_width: int
    ) -> tuple[Dashboard, Panel, int, int, int, dict[str, str]]:
        """The dashboard, panel, range, width and variables a panel request names."""
        d = self._dashboard(request.path_params["name"])
        p = d.panel(request.path_params["panel"])
        if p is None:
            raise _Refusal(self._refuse(404, "not-found", "no such panel in the dashboard"))
        start, end = self._range(request)
        width = _int(request, "width", default_width)
        if not MIN_WIDTH_PX <= width <= MAX_WIDTH_PX:
            raise PanelError(f"width: {MIN_WIDTH_PX} to {MAX_WIDTH_PX} pixels")
        return d, p, start, end, width, self._variables(d, request)

    async def panel(self, request: Request) -> Response:
        try:
            _, p, start, end, width, variables = self._panel_request(request, 800)
            answer = await self._run(p, start, end, width, variables)
        except _Refusal as r:
            return r.response
        except PanelError as e:
            return self._refuse(400, "bad-panel-request", str(e))
        except StoreError as e:
            self.panel_queries.labels("store-error").inc()
            return _Json({"error": e.message}, status_code=_status(e.status))
        self.panel_queries.labels("ok").inc()
        return _Json(answer)

    # -- export ----------------------------------------------------------------------

    async def export_panel(self, request: Request) -> Response:
        """A panel as PNG, SVG or PDF (drawn by matplotlib), or its data as Parquet."""
        name = request.path_params["name"]
        fmt = request.query_params.get("format", "")
        if fmt not in (*IMAGE_FORMATS, "parquet"):
            return self._refuse(400, "bad-export", "format: one of png, svg, pdf, parquet")
        try:
            _, p, start, end, width, variables = self._panel_request(request, 900)
            if self.exports >= MAX_EXPORTS:
                return self._refuse(503, "export-busy", "too many exports at once: retry")
            self.exports += 1
            try:
                answer = await self._run(p, start, end, width, variables)
                frames = answer["frames"]
                if fmt == "parquet":
                    body = await anyio.to_thread.run_sync(
                        panel_parquet, frames, end, limiter=self.export_threads
                    )
                else:
                    body = await anyio.to_thread.run_sync(
                        panel_image, p, frames, fmt, width, limiter=self.export_threads
                    )
            finally:
                self.exports -= 1
        except _Refusal as r:
            return r.response
        except (PanelError, ExportError) as e:
            return self._refuse(400, "bad-export", str(e))
        except StoreError as e:
            return _Json({"error": e.message}, status_code=_status(e.status))
        return _download(body, MEDIA[fmt], f"{name}-{p.id}.{fmt}")

    async def export_dashboard(self, request: Request) -> Response:
        """Every panel of a dashboard drawn on one PNG, SVG or PDF, laid out as the page."""
        name = request.path_params["name"]
        fmt = request.query_params.get("format", "")
        if fmt not in IMAGE_FORMATS:
            return self._refuse(400, "bad-export", "format: one of png, svg, pdf")
        try:
            d = self._dashboard(name)
            start, end = self._range(request)
            width = _int(request, "width", 1600)
            if not 400 <= width <= MAX_WIDTH_PX:
                raise PanelError(f"width: 400 to {MAX_WIDTH_PX} pixels")
            variables = self._variables(d, request)
            if self.exports >= MAX_EXPORTS:
                return self._refuse(503, "export-busy", "too many exports at once: retry")
            self.exports += 1
            try:
                panels = [p for row in d.rows for p in row.panels][:MAX_PANELS]

                async def one(p: Panel) -> Any:
                    try:
                        w = max(MIN_WIDTH_PX, width * p.width // 12)
                        return (await self._run(p, start, end, w, variables))["frames"]
                    except (PanelError, StoreError) as e:
                        return str(getattr(e, "message", e))[:300]

                results = await asyncio.gather(*(one(p) for p in panels))
                answers = {p.id: r for p, r in zip(panels, results, strict=True)}
                body = await anyio.to_thread.run_sync(
                    dashboard_image, d, answers, fmt, start, end, width,
                    limiter=self.export_threads,
                )  # fmt: skip
            finally:
                self.exports -= 1
        except _Refusal as r:
            return r.response
        except (PanelError, ExportError) as e:
            return self._refuse(400, "bad-export", str(e))
        return _download(body, MEDIA[fmt], f"{name}.{fmt}")

    def _range(self, request: Request) -> tuple[int, int]:
        now = int(time.time() * 1000)
        end = _int(request, "end", now)
        start = _int(request, "start", end - 3_600_000)
        if not 0 <= start < end:
            raise PanelError("start must be before end (epoch milliseconds)")
        if end > MAX_TIME_MS:
            raise PanelError("end: epoch milliseconds up to the year 9999")
        if end - start > self.ui.max_range.total_seconds() * 1000:
            raise PanelError(f"the range is longer than ui.max_range ({self.ui.max_range})")
        return start, end

    def _variables(self, d: Dashboard, request: Request) -> dict[str, str]:
        given = {k[4:]: v for k, v in request.query_params.items() if k.startswith("var-")}
        unknown = set(given) - {v.name for v in d.variables}
        if unknown:
            raise PanelError(f"not a variable of the dashboard: {sorted(unknown)[0][:64]!r}")
        out = {}
        for v in d.variables:
            value = given.get(v.name, v.default or (ALL if v.include_all else ""))
            if len(value) > 256:
                raise PanelError(f"variable {v.name}: a value is at most 256 characters")
            if value == ALL and not v.include_all:
                raise PanelError(f"variable {v.name} has no All value")
            out[v.name] = value
        return out

    async def _run(
        self, p: Panel, start: int, end: int, width: int, variables: dict[str, str]
    ) -> dict[str, Any]:
        step = choose_step(start, end, width, p.min_step.total_seconds())
        first = first_point(start, end, step)
        limit = self.ui.max_query_chars
        calls: list[Coroutine[Any, Any, Any]] = []
        for q in p.queries:
            if q.promql:
                text = substitute(q.promql, variables, step, (end - start) // 1000)
                if len(text) > limit:
                    raise PanelError(f"the query is over ui.max_query_chars ({limit})")
                if q.instant or p.type in INSTANT_TYPES:
                    form = {"query": text, "time": f"{end / 1000:.3f}"}
                    calls.append(self.store.prometheus("query", form))
                else:
                    form = {"query": text, "start": f"{first / 1000:.3f}",
                            "end": f"{end / 1000:.3f}", "step": str(step),
                            "format": "grid"}  # fmt: skip
                    if step >= MIN_WINDOWED_STEP_S:  # stored windows up to half a step
                        form["max_source_resolution"] = f"{step // 2}s"
                    calls.append(self.store.prometheus("query_range", form))
            else:
                if len(q.sql) > limit:
                    raise PanelError(f"the query is over ui.max_query_chars ({limit})")
                params = sql_parameters(q.sql, variables, first, end, step)
                calls.append(self.store.sql(q.sql, params, self.ui.max_rows))
        results = await asyncio.gather(*calls)
        frames: list[Any] = []
        warnings: list[str] = []
        total = 0
        for q, res in zip(p.queries, results, strict=True):
            room = max(0, self.ui.max_series - len(frames))
            if isinstance(res, dict):
                got, n = prom_frames(res.get("data") or {}, q, room, first, step, end)
                warnings += [str(w)[:300] for w in res.get("warnings", [])]
            else:
                got, n = sql_frames(res[0], res[1], p, room)
            frames += got
            total += n
        if total > len(frames) and not any(f["kind"] == "table" for f in frames):
            warnings.append(f"showing {len(frames)} of {total} series (ui.max_series)")
        if p.type == "heatmap":
            h = heatmap(frames)
            frames = [h] if h is not None else frames
        return {"frames": frames, "step_s": step, "start": first, "end": end,
                "warnings": warnings[:10], "series_total": total}  # fmt: skip

    async def annotations(self, request: Request) -> Response:
        """The events of each of the dashboard's annotations over the range."""
        try:
            d = self._dashboard(request.path_params["name"])
            start, end = self._range(request)
            variables = self._variables(d, request)
            calls = [
                self.store.sql(
                    a.sql, sql_parameters(a.sql, variables, start, end, 1), MAX_ANNOTATIONS
                )
                for a in d.annotations
            ]
            results = await asyncio.gather(*calls)
        except _Refusal as r:
            return r.response
        except PanelError as e:
            return self._refuse(400, "bad-annotation-request", str(e))
        except StoreError as e:
            return _Json({"error": e.message}, status_code=_status(e.status))
        out = []
        for a, (_, rows) in zip(d.annotations, results, strict=True):
            events = [(time_ms(r[0]), str(r[1])[:500] if len(r) > 1 else "") for r in rows if r]
            events = [(t, text) for t, text in events if t is not None]
            out.append({"name": a.name, "color": a.color, "t": [t for t, _ in events],
                        "text": [text for _, text in events]})  # fmt: skip
        return _Json({"annotations": out})

    async def alert_bands(self, request: Request) -> Response:
        """The alert incidents overlapping the range (the store's ``alert_events`` and
        ``alert_acks``) and the runs of pending alerts (``ALERTS{alertstate="pending"}``),
        for the pages to draw as bands on the series they match."""
        try:
            start, end = self._range(request)
            params = {"param_start_ms": str(start), "param_end_ms": str(end),
                      "param_limit": str(MAX_BANDS)}  # fmt: skip
            (_, rows), pending = await asyncio.gather(
                self.store.sql(ACKED_INCIDENTS, params, MAX_BANDS),
                self._pending_runs(params),
            )
        except PanelError as e:
            return self._refuse(400, "bad-band-request", str(e))
        except StoreError as e:
            return _Json({"error": e.message}, status_code=_status(e.status))
        bands = []
        for r in rows:
            if len(r) < 8 or not isinstance(r[2], dict):
                continue
            bands.append({
                "state": "firing", "fingerprint": str(r[0])[:64], "alertname": str(r[1])[:200],
                "labels": _band_labels(r[2]), "from": _ms(r[3]), "to": _ms(r[4]),
                "resolved": r[5] is not None, "acked_ms": _ms(r[6]) or None,
                "acked_by": str(r[7])[:200],
            })  # fmt: skip
        for r in pending:
            if len(r) < 5 or not isinstance(r[0], dict):
                continue
            labels = _band_labels({k: v for k, v in r[0].items() if k != "alertstate"})
            first, last, n = _ms(r[1]), _ms(r[2]), _ms(r[4])
            if not r[3]:  # still pending at its last sample: until the next evaluation
                last = min(end, last + ((last - first) // (n - 1) if n > 1 else PENDING_STEP_MS))
            bands.append({
                "state": "pending", "fingerprint": fingerprint(labels),
                "alertname": labels.get("alertname", ""), "labels": labels,
                "from": first, "to": last, "resolved": bool(r[3]),
                "acked_ms": None, "acked_by": "",
            })  # fmt: skip
        return _Json({"bands": bands})

    async def _pending_runs(self, params: dict[str, str]) -> list[list[Any]]:
        """Rows of ``PENDING_RUNS``; none if the store refuses it (the firing bands
        still draw)."""
        try:
            _, rows = await self.store.sql(PENDING_RUNS, params, MAX_BANDS)
        except StoreError as e:
            log.warning("pending_bands_failed", status=e.status, error=e.message[:300])
            return []
        return rows

    async def variable(self, request: Request) -> Response:
        try:
            d = self._dashboard(request.path_params["name"])
            v = d.variable(request.path_params["var"])
            if v is None:
                return self._refuse(404, "not-found", "no such variable in the dashboard")
            start, end = self._range(request)
            values = await self._values(v, start, end)
        except _Refusal as r:
            return r.response
        except PanelError as e:
            return self._refuse(400, "bad-variable-request", str(e))
        except StoreError as e:
            return _Json({"error": e.message}, status_code=_status(e.status))
        return _Json({"name": v.name, "values": values[:MAX_VALUES], "text": v.text,
                             "include_all": v.include_all, "default": v.default})  # fmt: skip

    async def _values(self, v: Variable, start: int, end: int) -> list[str]:
        if v.text:
            return []
        if v.values:
            return list(v.values)
        if v.sql:
            _, rows = await self.store.sql(v.sql, sql_parameters(v.sql, {}, start, end, 1),
                                           MAX_VALUES)  # fmt: skip
            return sorted({str(r[0]) for r in rows if r})
        form = {"start": f"{start / 1000:.3f}", "end": f"{end / 1000:.3f}"}
        if v.match:
            form["match[]"] = v.match
        res = await self.store.prometheus(f"label/{v.label}/values", form, method="GET")
        data = res.get("data")
        return [str(x) for x in data] if isinstance(data, list) else []

    # -- home and live -----------------------------------------------------------------

    async def home(self, _request: Request) -> Response:
        async def rows(sql: str) -> tuple[list[str], list[list[Any]], str]:
            try:
                meta, data = await self.store.sql(sql, {}, 100)
            except StoreError as e:
                return [], [], e.message
            return [str(m["name"]) for m in meta], data, ""

        health, alerts, fresh = await asyncio.gather(
            self.store.health(), rows(FIRING_SQL), rows(FRESHNESS_SQL)
        )
        freshness = dict(zip(fresh[0], fresh[1][0], strict=True)) if fresh[1] else {}
        return _Json({
            "dashboards": self.dashboards.listing(),
            "alerts": {"columns": alerts[0], "rows": alerts[1], "error": alerts[2]},
            "health": {"store": health, "freshness": freshness, "error": fresh[2],
                       "now_ms": int(time.time() * 1000)},
        })  # fmt: skip

    async def events(self, request: Request) -> Response:
        if self.live_clients >= self.ui.max_live_clients:
            return self._refuse(503, "live-clients", "too many live pages (ui.max_live_clients)")
        poll = self.ui.live_poll.total_seconds()
        # counted now, in the same step as the check (streams accepted at once would
        # all pass it otherwise), and released when the response ends however it ends
        self.live_clients += 1

        async def stream() -> Any:
            yield "retry: 5000\n\n"
            last: int | None = None
            quiet_since = time.monotonic()
            deadline = time.monotonic() + STREAM_S  # the browser reconnects on its own
            while not self.feed.closed and time.monotonic() < deadline:
                end = await self.feed.latest()
                if end is not None and end != last:
                    last = end
                    quiet_since = time.monotonic()
                    yield f"event: window\ndata: {json.dumps({'end_ms': end})}\n\n"
                elif time.monotonic() - quiet_since > 15:
                    quiet_since = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(poll)

        def release() -> None:
            self.live_clients -= 1

        return _CountedStream(
            release, stream(), max_s=STREAM_S + 60, media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )  # fmt: skip

    def _refuse(self, status: int, reason: str, message: str) -> Response:
        self.refused.labels(reason).inc()
        return _Json({"error": message}, status_code=status)


class _CountedStream(StreamingResponse):
    """A streaming response that calls ``release`` once when it ends, however it ends
    (sent whole, the client gone, cancelled), and ends after ``max_s`` at the latest:
    a client that never reads blocks the stream's writes once the socket's buffers are
    full, and would otherwise hold its place for good."""

    def __init__(
        self, release: Callable[[], None], *args: Any, max_s: float = 660.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._release: Callable[[], None] | None = release
        self.max_s = max_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            with anyio.move_on_after(self.max_s):
                await super().__call__(scope, receive, send)
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


def _download(body: bytes, media_type: str, filename: str) -> Response:
    """A file to save (names are dashboard names and panel ids: ``[A-Za-z0-9_-]``)."""
    return Response(body, media_type=media_type, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store"})  # fmt: skip


class _Asset:
    """A large static file (plotly.js, 4.8 MB) read and gzipped once, on its first
    request (in a thread), then served from memory: gzip when the browser accepts it
    (1.4 MB), an ETag, and a day's caching with revalidation (``304``) after it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: tuple[bytes, bytes, str] | None = None
        self._lock = asyncio.Lock()

    def _load(self) -> tuple[bytes, bytes, str]:
        raw = self.path.read_bytes()
        etag = '"' + hashlib.blake2b(raw, digest_size=16).hexdigest() + '"'
        return raw, gzip.compress(raw, compresslevel=6), etag

    async def response(self, request: Request) -> Response:
        async with self._lock:  # one load however many pages open at once
            if self._loaded is None:
                self._loaded = await anyio.to_thread.run_sync(self._load)
        raw, gz, etag = self._loaded
        headers = {"ETag": etag, "Cache-Control": "public, max-age=86400",
                   "Vary": "Accept-Encoding"}  # fmt: skip
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        if "gzip" in request.headers.get("accept-encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            return Response(gz, media_type="text/javascript", headers=headers)
        return Response(raw, media_type="text/javascript", headers=headers)


class _Json(JSONResponse):
    """A JSON answer encoded by orjson (a 200-series panel is megabytes: ~5x faster than
    the standard library's encoder; NaN and infinities become null)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _Refusal(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


async def _chunks(f: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """``size`` bytes of ``f`` in chunks of ``REPORT_CHUNK`` (each read in a worker
    thread); closes ``f``."""
    try:
        left = size
        while left > 0:
            chunk = await anyio.to_thread.run_sync(f.read, min(REPORT_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        f.close()


def _band_labels(labels: dict[Any, Any]) -> dict[str, str]:
    """An alert's labels as a band carries them: at most 64, names and values cut."""
    return {str(k)[:200]: str(v)[:500] for k, v in list(labels.items())[:64]}


def _ms(v: Any) -> int:
    """An epoch-ms cell of the store's answer (a number, or its text), else 0."""
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _int(request: Request, key: str, default: int) -> int:
    """A query parameter as a whole number (ASCII digits, an optional ``-``)."""
    raw = request.query_params.get(key)
    if raw is None or raw == "":
        return default
    if not _INT.fullmatch(raw):
        raise PanelError(f"{key}: a whole number (epoch milliseconds, or pixels for width)")
    return int(raw)


def _status(store_status: int) -> int:
    """The UI's status for a store's: its 4xx are the query's fault, the rest ours."""
    if store_status in (400, 422):
        return store_status
    if 400 <= store_status < 500:
        return 502  # 401/403/404: the UI's settings (token, URL) do not fit the store
    return 503 if store_status == 503 else 502


def _guard(request: Request) -> Guard:
    """The guard of the server answering ``request`` (for its body limits)."""
    guard = request.scope.get("monitoring.guard")
    return guard if isinstance(guard, Guard) else Guard.for_bind("127.0.0.1")


def _plotly_js() -> Path | None:
    """plotly.js as the installed ``plotly`` package ships it (no CDN: offline)."""
    try:
        import plotly
    except ImportError:  # pragma: no cover - a dependency of the project
        return None
    path = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
    return path if path.is_file() else None
