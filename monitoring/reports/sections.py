"""A report's sections for a period, computed from the store through its query client.

Each section is a :class:`Section`: a title, a summary line, tables of rows and figures
(plots rendered by :mod:`monitoring.plots`). A section whose tables hold no data says
so (``empty``); one whose query fails says why (``error``) and the report goes on.

Where the numbers come from:

- **alerts**: the notifier's delivery log (``deliveries``): per alert fingerprint, its
  incidents (:func:`incidents`: a firing notification opens one, the next resolved one
  closes it); MTTR is the mean time from opening to closing of those resolved. A
  notification's status is its group's, so an alert resolved while others of its group
  still fire closes when the group resolves. MTTA comes from the store's alert state
  tables (``alert_events``, ``alert_acks``: :mod:`monitoring.query.alert_state`): the
  mean time from an incident's firing to its first acknowledgement, over those
  acknowledged.
- **anomalies**: the ``anomalies`` table, the highest scores of the period.
- **log templates**: ``logs`` counted per template in the period and in the period
  before it (growth), template text from ``log_templates``.
- **models**: PromQL over ``model_accuracy_rolling``, ``model_mae_rolling``,
  ``model_feature_drift``.
- **resources**: PromQL over ``node_cpu_usage_percent`` / ``node_memory_used_bytes``
  (the load generator's and SDK's names), else node_exporter's
  ``node_cpu_seconds_total`` / ``node_memory_MemAvailable_bytes``.
- **SLO**: availability of ``http_requests_total`` (non-5xx share of requests) per
  service against the target.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitoring.plots import PlotConfig, PlotGenerator
from monitoring.query.alert_state import MTTA_MTTR
from monitoring.query.client import Series, StoreClient, StoreError

TOP = 10  # rows of a "top" table
MAX_EVENTS = 2000  # deliveries read per alert fingerprint
MAX_INCIDENTS = 1000  # incidents read for the alerts section's MTTR
MAX_ROWS = 200  # rows of a section's table (a fleet's hosts, services...)
_ALERTNAME = re.compile(r'alertname="((?:[^"\\]|\\.)*)"')


@dataclass
class Figure:
    """A plot in a report: caption, format and bytes."""

    caption: str
    format: str
    content: bytes


@dataclass
class Block:
    """A further table of a section, with its caption."""

    caption: str
    columns: list[str]
    rows: list[list[str]]


@dataclass
class Section:
    """One section of a report."""

    key: str
    title: str
    summary: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str = ""
    blocks: list[Block] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.rows and not self.figures and not self.error


@dataclass
class Period:
    """The reported interval, ``[start, end)`` in Unix seconds (half-open: an event at
    the boundary belongs to the period it starts, never to two adjacent reports)."""

    start_s: float
    end_s: float

    @property
    def seconds(self) -> float:
        return self.end_s - self.start_s

    @property
    def promql_range(self) -> str:
        """The period as a PromQL range (``[86400s]``)."""
        return f"{max(1, round(self.seconds))}s"

    def sql_params(self) -> dict[str, str]:
        """``start``, ``end`` and ``before`` (the period before) as DateTime64 text."""
        return {
            "start": _dt_text(self.start_s),
            "end": _dt_text(self.end_s),
            "before": _dt_text(self.start_s - self.seconds),
        }

    def step_s(self, points: int = 240) -> float:
        return float(max(60, math.ceil(self.seconds / points / 60) * 60))


def _dt_text(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def fmt_time(value: Any) -> str:
    """A stored time (``2026-12-06 07:00:00.000``) as ``2026-12-06 07:00 UTC``."""
    return str(value)[:16] + " UTC"


def fmt_duration(seconds: float) -> str:
    """``5400`` -> ``1 h 30 min``.

    >>> fmt_duration(5400), fmt_duration(42), fmt_duration(90_000), fmt_duration(86_400)
    ('1 h 30 min', '42 s', '1 d 1 h', '1 d')
    """
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86_400:
        big, small = f"{s // 3600} h", f"{s % 3600 // 60} min"
    else:
        big, small = f"{s // 86_400} d", f"{s % 86_400 // 3600} h"
    return big if small.startswith("0 ") else f"{big} {small}"


def fmt_num(v: float, digits: int = 3) -> str:
    """A number for a table (``n/a`` when not finite)."""
    return f"{v:.{digits}g}" if math.isfinite(v) else "n/a"


class Sections:
    """Computes the sections of one period (see the module)."""

    def __init__(self, client: StoreClient, period: Period, slo_target: float = 0.999) -> None:
        self.client = client
        self.period = period
        self.slo_target = slo_target
        self.plots = PlotGenerator()

    def all(self, keys: list[str] | None = None) -> list[Section]:
        """The sections named in ``keys`` (default all), each computed on its own."""
        builders: dict[str, tuple[str, Callable[[Section], None]]] = {
            "slo": ("SLO attainment", self.slo),
            "alerts": ("Alerts fired", self.alerts),
            "anomalies": ("Top anomalies", self.anomalies),
            "logs": ("Log templates", self.logs),
            "models": ("Model quality", self.models),
            "resources": ("Resource utilization", self.resources),
            "performance": ("Performance", self.performance),
        }
        out = []
        for key in keys or list(builders):
            title, build = builders[key]
            section = Section(key, title)
            try:
                build(section)
            except StoreError as e:
                section.error = f"could not be computed: {str(e)[:300]}"
            if len(section.rows) > MAX_ROWS:  # what a section did not bound itself
                section.notes.append(f"{len(section.rows) - MAX_ROWS} more rows not shown.")
                del section.rows[MAX_ROWS:]
            out.append(section)
        return out

    # -- figures -------------------------------------------------------------------

    def figure(self, caption: str, data: Any, **config: Any) -> Figure | None:
        """A plot of ``data`` as SVG for the report (None without data)."""
        if not data:
            return None
        cfg = PlotConfig.model_validate(
            {"format": "svg", "width_px": 760, "height_px": 300, "max_series": 10, **config}
        )
        plot = self.plots.generate(data=data, plot_config=cfg)
        return Figure(caption, "svg", plot.content)

    def _range(self, expr: str) -> list[Series]:
        p = self.period
        return self.client.query_range(expr, p.start_s, p.end_s, p.step_s())

    def _instant(self, expr: str) -> list[Series]:
        return self.client.query(expr, self.period.end_s)

    # -- sections ------------------------------------------------------------------

    def alerts(self, s: Section) -> None:
        table = self.client.sql(
            "SELECT fp, any(group_key) AS grp, "
            f"arraySlice(arraySort(groupArray((time, status, toUInt8(outcome = 'delivered')))),"
            f" 1, {MAX_EVENTS}) AS events, "
            "arrayStringConcat(arraySort(groupUniqArray(receiver)), ', ') AS receivers "
            "FROM deliveries FINAL ARRAY JOIN fingerprints AS fp "
            "WHERE time >= {start:DateTime64(3)} AND time < {end:DateTime64(3)} "
            "GROUP BY fp HAVING countIf(status = 'firing') > 0 ORDER BY min(time) LIMIT 1000",
            self.period.sql_params(),
        )
        repair: list[float] = []
        per_name: dict[str, int] = {}
        found = [
            (str(r["grp"]), str(r["receivers"]), incident)
            for r in table.records()
            for incident in incidents(r["events"])
        ]
        for grp, receivers, (fired, resolved, sent) in sorted(found, key=lambda f: f[2][0]):
            name = _alertname(grp)
            per_name[name] = per_name.get(name, 0) + 1
            ttr = _epoch(resolved) - _epoch(fired) if resolved is not None else math.nan
            if math.isfinite(ttr):
                repair.append(ttr)
            s.rows.append(
                [
                    name,
                    fmt_time(fired),
                    fmt_time(resolved) if resolved is not None else "not resolved",
                    fmt_duration(ttr) if math.isfinite(ttr) else "",
                    str(sent),
                    receivers,
                ]
            )
            if len(s.rows) >= MAX_INCIDENTS:
                s.notes.append(f"Only the first {MAX_INCIDENTS} incidents are listed.")
                break
        s.columns = ["alert", "fired", "resolved", "time to resolve", "notifications", "to"]
        if not s.rows:
            return
        mttr = fmt_duration(sum(repair) / len(repair)) if repair else "n/a (none resolved)"
        s.summary = f"{len(s.rows)} alerts fired; MTTR {mttr}; MTTA {self._mtta()}"
        s.notes.append(
            "Times are the notifier's first delivery of each state. MTTA is the mean time "
            "from an alert's firing (its evaluation) to its first acknowledgement."
        )
        names = sorted(per_name)
        fig = self.figure(
            "Alerts fired per alert name",
            {"alerts": (names, [per_name[n] for n in names])},
            type="bar", legend=False, title="alerts fired",
        )  # fmt: skip
        if fig:
            s.figures.append(fig)

    def _mtta(self) -> str:
        """MTTA of the period's incidents, with how many were acknowledged."""
        p = self.period
        params = {"start_ms": int(p.start_s * 1000), "end_ms": int(p.end_s * 1000),
                  "limit": MAX_INCIDENTS}  # fmt: skip
        try:
            rows = self.client.sql(MTTA_MTTR, params).records()
        except StoreError as e:
            return f"n/a ({str(e)[:120]})"
        r = rows[0] if rows else {}
        incidents, acked = int(r.get("incidents") or 0), int(r.get("acknowledged") or 0)
        if not acked:
            return f"n/a (none of {incidents} acknowledged)"
        return f"{fmt_duration(float(r['mtta_s']))} ({acked} of {incidents} acknowledged)"

    def anomalies(self, s: Section) -> None:
        table = self.client.sql(
            "SELECT ts, series, score, value, threshold, detector FROM anomalies FINAL "
            "WHERE ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)} "
            f"ORDER BY score DESC, ts LIMIT {TOP}",
            self.period.sql_params(),
        )
        count = self.client.sql(
            "SELECT name, count() AS n FROM anomalies FINAL "
            "WHERE ts >= {start:DateTime64(3)} AND ts < {end:DateTime64(3)} "
            "GROUP BY name ORDER BY n DESC, name LIMIT 20",
            self.period.sql_params(),
        )
        s.columns = ["time", "series", "score", "value", "threshold", "detector"]
        for r in table.records():
            s.rows.append(
                [fmt_time(r["ts"]), str(r["series"]), fmt_num(float(r["score"])),
                 fmt_num(float(r["value"]), 6), fmt_num(float(r["threshold"])), str(r["detector"])]
            )  # fmt: skip
        if not s.rows:
            return
        total = sum(int(n) for n in count.column("n"))
        s.summary = f"{total} anomalies over {len(count.rows)} metrics; the {len(s.rows)} highest"
        fig = self.figure(
            "Anomalies per metric", count, type="bar", legend=False, title="anomalies"
        )
        if fig:
            s.figures.append(fig)

    def logs(self, s: Section) -> None:
        table = self.client.sql(
            "SELECT l.service AS service, l.template_id AS id, "
            "countIf(l.timestamp >= {start:DateTime64(3)}) AS now, "
            "countIf(l.timestamp < {start:DateTime64(3)}) AS before "
            "FROM logs AS l WHERE l.timestamp >= {before:DateTime64(3)} "
            "AND l.timestamp < {end:DateTime64(3)} GROUP BY service, id "
            "HAVING now > 0 ORDER BY now DESC LIMIT 1000",
            self.period.sql_params(),
        )
        rows = table.records()
        s.columns = ["service", "template", "lines", "period before", "growth"]
        if not rows:
            return
        growing = sorted(rows, key=lambda r: -(int(r["now"]) + 1) / (int(r["before"]) + 1))
        shown = {(str(r["service"]), int(r["id"])) for r in rows[:TOP] + growing[:5]}
        texts = self.client.sql(  # the texts of the templates shown, no others
            "SELECT service, template_id, substringUTF8(argMax(template, size), 1, 160) "
            "FROM log_templates WHERE has({keys:Array(Tuple(String, UInt64))}, "
            "(service, toUInt64(template_id))) GROUP BY service, template_id",
            {"keys": sorted(shown)},
        )
        text = {(str(r[0]), int(r[1])): str(r[2]) for r in texts.rows}

        def row(r: dict[str, Any]) -> list[str]:
            key = (str(r["service"]), int(r["id"]))
            growth = _growth(int(r["now"]), int(r["before"]))
            return [key[0], text.get(key, f"#{key[1]}")[:160], str(r["now"]), str(r["before"]),
                    growth]  # fmt: skip

        s.rows = [row(r) for r in rows[:TOP]]
        s.summary = (
            f"{sum(int(r['now']) for r in rows)} lines in {len(rows)} templates; "
            "the most frequent first, the fastest-growing below"
        )
        s.blocks.append(
            Block("Fastest-growing templates", s.columns, [row(r) for r in growing[:5]])
        )
        top = rows[:TOP]
        labels = [f"{r['service']}#{r['id']}" for r in top]
        fig = self.figure(
            "Log lines per template (this period)",
            {"lines": (labels, [int(r["now"]) for r in top])},
            type="bar", legend=False, title="top log templates",
        )  # fmt: skip
        if fig:
            s.figures.append(fig)

    def models(self, s: Section) -> None:
        r = self.period.promql_range
        acc = self._instant(f"avg by (model, version) (avg_over_time(model_accuracy_rolling[{r}]))")
        mae = self._instant(f"avg by (model, version) (avg_over_time(model_mae_rolling[{r}]))")
        drift = self._instant(
            f"count by (model, version) (max_over_time(model_feature_drift[{r}]) > 0)"
        )
        keys = sorted(
            {(x.labels.get("model", ""), x.labels.get("version", "")) for x in acc + mae + drift}
        )
        s.columns = ["model", "version", "accuracy (mean)", "MAE (mean)", "features drifted"]
        for key in keys:
            s.rows.append(
                [key[0], key[1], fmt_num(_pick(acc, key)), fmt_num(_pick(mae, key)),
                 str(int(_pick(drift, key, 0.0)))]
            )  # fmt: skip
        if not s.rows:
            return
        s.summary = f"{len(keys)} model versions, means over the period"
        fig = self.figure(
            "Rolling accuracy per model version",
            self._range("avg by (model, version) (model_accuracy_rolling)"),
            title="accuracy",
        )
        if fig:
            s.figures.append(fig)

    def performance(self, section: Section) -> None:
        """Services' routes by share of server time and ``monitoring perf suggest``'s
        suggestions with their evidence (``monitoring.perf.report_section``)."""
        from monitoring.perf import report_section

        report_section.fill(section, self.client, self.period.start_s, self.period.end_s)

    def resources(self, s: Section) -> None:
        r = self.period.promql_range
        cpu_expr = "avg by (host) (node_cpu_usage_percent)"
        cpu = self._instant(f"avg by (host) (avg_over_time(node_cpu_usage_percent[{r}]))")
        peak = self._instant(f"max by (host) (max_over_time(node_cpu_usage_percent[{r}]))")
        mem = self._instant(f"max by (host) (max_over_time(node_memory_used_bytes[{r}]))")
        if not cpu:
            cpu_expr = (
                '100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5m])))'
            )
            cpu = self._instant(
                f'100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{{mode="idle"}}[{r}])))'
            )
            mem = self._instant(
                "max by (instance) (max_over_time(node_memory_MemTotal_bytes"
                f"[{r}]) - min_over_time(node_memory_MemAvailable_bytes[{r}]))"
            )
        hosts = sorted(
            {x.labels.get("host") or x.labels.get("instance", "") for x in cpu + peak + mem}
        )
        s.columns = ["host", "CPU mean %", "CPU peak %", "memory used peak"]
        label = "host" if any("host" in x.labels for x in cpu) else "instance"
        cpu_of, peak_of, mem_of = _last_by(cpu, label), _last_by(peak, label), _last_by(mem, label)
        if len(hosts) > MAX_ROWS:  # the busiest first, the rest counted in a note
            busiest = sorted(hosts, key=lambda h: -_or_low(peak_of.get(h, cpu_of.get(h))))
            shown = busiest[:MAX_ROWS]
            s.notes.append(f"{len(hosts) - MAX_ROWS} more hosts not shown (the busiest first).")
        else:
            shown = hosts
        for h in shown:
            s.rows.append(
                [h, fmt_num(cpu_of.get(h, math.nan)), fmt_num(peak_of.get(h, math.nan)),
                 _bytes(mem_of.get(h, math.nan))]
            )  # fmt: skip
        if not s.rows:
            return
        s.summary = f"{len(hosts)} hosts"
        fig = self.figure("CPU utilization per host", self._range(cpu_expr), unit="%", title="CPU")
        if fig:
            s.figures.append(fig)

    def slo(self, s: Section) -> None:
        r = self.period.promql_range
        ok = self._instant(
            f'sum by (service) (increase(http_requests_total{{status!~"5.."}}[{r}]))'
            f" / sum by (service) (increase(http_requests_total[{r}]))"
        )
        target = self.slo_target
        s.columns = ["service", "availability", "target", "met", "error budget left"]
        found = [
            (x.labels.get("service") or "(no service label)", float(x.values[-1]))
            for x in ok
            if len(x.values) and math.isfinite(float(x.values[-1]))
        ]
        found.sort(key=lambda f: f[0])
        met = sum(v >= target for _, v in found)
        if len(found) > MAX_ROWS:  # the least available first, the rest counted in a note
            found = sorted(found, key=lambda f: f[1])
            s.notes.append(
                f"{len(found) - MAX_ROWS} more services not shown (the least available first)."
            )
        for service, v in found[:MAX_ROWS]:
            budget = 1 - (1 - v) / (1 - target) if target < 1 else math.nan
            s.rows.append(
                [service, f"{100 * v:.3f} %", f"{100 * target:g} %",
                 "yes" if v >= target else "NO", f"{100 * budget:.1f} %"]
            )  # fmt: skip
        if not s.rows:
            return
        s.summary = f"{met} of {len(found)} services met {100 * target:g} % availability"
        s.notes.append(
            "Availability: the share of requests without a 5xx status (http_requests_total)."
        )


def incidents(events: list[Any]) -> list[tuple[str, str | None, int]]:
    """An alert's incidents from its deliveries ``(time, status, delivered)`` in time
    order: each opens at a firing notification while none is open and closes at the next
    resolved one (a resolution before any firing closes an incident begun before the
    period: ignored). ``(fired, resolved or None, notifications delivered in it)``.

    >>> incidents([["t0", "resolved", 1], ["t1", "firing", 1], ["t2", "firing", 1],
    ...            ["t3", "resolved", 1], ["t3", "resolved", 1], ["t4", "firing", 0]])
    [('t1', 't3', 4), ('t4', None, 0)]
    """
    out: list[tuple[str, str | None, int]] = []
    opened: str | None = None
    sent = 0
    for t, status, delivered in events:
        if status == "firing" and opened is None:
            opened, sent = str(t), 0
        if opened is None:
            if out and str(t) == out[-1][1]:  # another receiver's copy of the resolution
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + int(delivered))
            continue
        sent += int(delivered)
        if status == "resolved":
            out.append((opened, str(t), sent))
            opened = None
    if opened is not None:
        out.append((opened, None, sent))
    return out


def _alertname(group_key: str) -> str:
    m = _ALERTNAME.search(group_key)
    return m.group(1).replace('\\"', '"') if m else group_key.split(":", 1)[-1][:80]


def _epoch(value: Any) -> float:
    text = str(value).replace(" ", "T")
    try:
        return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return 0.0


def _growth(now: int, before: int) -> str:
    if before == 0:
        return "new"
    return f"{(now - before) / before:+.0%}"


def _pick(series: list[Series], key: tuple[str, str], default: float = math.nan) -> float:
    for x in series:
        if (x.labels.get("model", ""), x.labels.get("version", "")) == key and len(x.values):
            return float(x.values[-1])
    return default


def _last_by(series: list[Series], label: str) -> dict[str, float]:
    """Each series' last value by its ``label`` (one pass, not a search per row)."""
    return {x.labels.get(label, ""): float(x.values[-1]) for x in series if len(x.values)}


def _or_low(v: float | None) -> float:
    return v if v is not None and math.isfinite(v) else -math.inf


def _bytes(v: float) -> str:
    if not math.isfinite(v):
        return "n/a"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or unit == "TiB":
            return f"{v:.1f} {unit}"
        v /= 1024
    return f"{v:.1f} TiB"  # pragma: no cover
