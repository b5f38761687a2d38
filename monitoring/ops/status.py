"""The deployment's status, pure parts: heartbeat records, consumer lag, the verdict.

Every long-running process publishes a **heartbeat** (``monitoring.ops.heartbeat``) to
the compacted ``<prefix>status`` topic, keyed by its process id: a small JSON object
(at most ``MAX_HEARTBEAT_BYTES``) with its kind, host, pid, version, start time,
readiness with the reasons, and a few key figures taken from its health dict.
``monitoring status`` reads them back (``parse_heartbeat``: anything else on the topic
is skipped and counted, it is an input like any other), adds the consumer lag of each
group and the dead letters of the last hour, and ``judge`` turns that into OK / WARN /
FAIL lines (the rules are in docs/operations.md).

>>> hb = Heartbeat("worker", "worker@h:1", "h", 1, "0.1.0", 1_000, 6_000, 5_000, True, (),
...                {"pending_rows": 0})
>>> parse_heartbeat(b"worker@h:1", hb.to_bytes()) == hb
True
>>> lag_of(committed=7, low=0, high=10), lag_of(committed=None, low=4, high=10)
(3, 6)
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from monitoring.api.health import bounded_reasons
from monitoring.ops.checks import CheckResult, Status

HEARTBEAT_VERSION = 1
MAX_HEARTBEAT_BYTES = 16 * 1024
MAX_FIGURES = 48
MAX_FIGURE_ITEMS = 64
MAX_TEXT = 200
_KIND = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_ID_MAX = 200

# Health fields a heartbeat carries (nested one level for the worker's agents:
# ``aggregation.closed_through_ms``). Numbers, short strings, and lists or maps of them.
FIGURE_KEYS = frozenset(
    {
        "status",
        "partitions",
        "closed_through_ms",
        "unacked_messages",
        "open_windows",
        "late_samples",
        "series",
        "pending_rows",
        "seconds_since_flush",
        "failing_for_s",
        "insert_failures",
        "paused",
        "last_evaluated_ms",
        "catching_up",
        "firing",
        "rules",
        "rejected_rules",
        "deliveries_in_flight",
        "failing_receivers",
        "receivers",
        "lag",
    }
)


class InvalidHeartbeat(ValueError):
    """A status-topic record that is not a heartbeat this build reads; ``reason`` is a
    short label for the skip counter."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Heartbeat:
    """One process's latest word about itself."""

    kind: str  # worker, store, evaluator, notifier, receiver, scraper, collector, ui
    id: str  # the record key: ``<kind>@<host>:<pid>`` unless configured
    host: str
    pid: int
    version: str
    started_ms: int
    sent_ms: int
    interval_ms: int
    ready: bool
    reasons: tuple[str, ...] = ()
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-able dict (``v`` first)."""
        return {
            "v": HEARTBEAT_VERSION,
            "kind": self.kind,
            "id": self.id,
            "host": self.host,
            "pid": self.pid,
            "version": self.version,
            "started_ms": self.started_ms,
            "sent_ms": self.sent_ms,
            "interval_ms": self.interval_ms,
            "ready": self.ready,
            "reasons": list(self.reasons),
            "figures": dict(self.figures),
        }

    def to_bytes(self) -> bytes:
        """Compact JSON, within ``MAX_HEARTBEAT_BYTES`` (figures dropped if they do not fit)."""
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        if len(data) > MAX_HEARTBEAT_BYTES:
            slim = {**self.to_json(), "figures": {"dropped": "over the size bound"}}
            data = json.dumps(slim, separators=(",", ":")).encode()
        return data


def _scalar(v: Any) -> Any:
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, int):
        return v if abs(v) < 1 << 62 else None
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, str):
        return v[:MAX_TEXT]
    return str(v)[:MAX_TEXT]


def bound_value(v: Any) -> Any:
    """A figure's value cut to shape: a scalar, or a list or map of at most
    ``MAX_FIGURE_ITEMS`` scalars (keys as strings).

    >>> bound_value({"0": 1.5, 1: float("nan")}), bound_value(list(range(70)))[-1]
    ({'0': 1.5, '1': None}, 63)
    """
    if isinstance(v, Mapping):
        return {str(k)[:64]: _scalar(x) for k, x in list(v.items())[:MAX_FIGURE_ITEMS]}
    if isinstance(v, list | tuple | set | frozenset):
        items = sorted(v, key=str) if isinstance(v, set | frozenset) else list(v)
        return [_scalar(x) for x in items[:MAX_FIGURE_ITEMS]]
    return _scalar(v)


def figures_from_health(health: Mapping[str, Any]) -> dict[str, Any]:
    """The ``FIGURE_KEYS`` of a health dict (and of its nested dicts, one level down,
    as ``<name>.<key>``), bounded; at most ``MAX_FIGURES``.

    >>> figures_from_health({"status": "ok", "token": "x", "aggregation": {"series": 3}})
    {'status': 'ok', 'aggregation.series': 3}
    """
    out: dict[str, Any] = {}
    for k, v in health.items():
        if len(out) >= MAX_FIGURES:
            break
        if k in FIGURE_KEYS:
            out[k] = bound_value(v)
        elif isinstance(v, Mapping):
            for k2, v2 in v.items():
                if k2 in FIGURE_KEYS and len(out) < MAX_FIGURES:
                    out[f"{str(k)[:32]}.{k2}"] = bound_value(v2)
    return out


def _int_field(data: Mapping[str, Any], key: str, lo: int = 0) -> int:
    v = data.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v < 1 << 62:
        raise InvalidHeartbeat("bad-field", f"{key} must be an integer >= {lo}")
    return v


def _str_field(data: Mapping[str, Any], key: str, limit: int) -> str:
    v = data.get(key)
    if not isinstance(v, str) or not v or len(v) > limit:
        raise InvalidHeartbeat("bad-field", f"{key} must be a string of 1 to {limit} characters")
    return v


def parse_heartbeat(key: bytes | None, value: bytes | None) -> Heartbeat:
    """A heartbeat from a status-topic record; InvalidHeartbeat for anything else
    (oversized, not JSON, another version, a field of the wrong type, a key that is not
    the record's id)."""
    if value is None:
        raise InvalidHeartbeat("tombstone")
    if len(value) > MAX_HEARTBEAT_BYTES:
        raise InvalidHeartbeat("oversized", f"{len(value)} bytes")
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # 16 KB of "[" recurses
        raise InvalidHeartbeat("not-json", str(e)[:100]) from None
    if not isinstance(data, dict):
        raise InvalidHeartbeat("not-an-object")
    if data.get("v") != HEARTBEAT_VERSION:
        raise InvalidHeartbeat("unknown-version", repr(data.get("v"))[:20])
    kind = _str_field(data, "kind", 32)
    if not _KIND.fullmatch(kind):
        raise InvalidHeartbeat("bad-field", "kind")
    pid_ = _str_field(data, "id", _ID_MAX)
    if key is None or key != pid_.encode():
        raise InvalidHeartbeat("key-mismatch", "the key is not the heartbeat's id")
    reasons = data.get("reasons", [])
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise InvalidHeartbeat("bad-field", "reasons must be a list of strings")
    figures = data.get("figures", {})
    if not isinstance(figures, dict):
        raise InvalidHeartbeat("bad-field", "figures must be an object")
    ready = data.get("ready")
    if not isinstance(ready, bool):
        raise InvalidHeartbeat("bad-field", "ready must be true or false")
    return Heartbeat(
        kind=kind,
        id=pid_,
        host=_str_field(data, "host", 255),
        pid=_int_field(data, "pid"),
        version=_str_field(data, "version", 64),
        started_ms=_int_field(data, "started_ms"),
        sent_ms=_int_field(data, "sent_ms"),
        interval_ms=_int_field(data, "interval_ms", 1),
        ready=ready,
        reasons=tuple(bounded_reasons(reasons)),
        figures={str(k)[:64]: bound_value(v) for k, v in list(figures.items())[:MAX_FIGURES]},
    )


# -- consumer lag -----------------------------------------------------------------------


def lag_of(committed: int | None, low: int, high: int) -> int:
    """Records not yet consumed: from the committed offset (or the log start, where a
    group without a commit starts: ``auto.offset.reset=earliest``) to the high watermark."""
    start = low if committed is None or committed < 0 else max(committed, low)
    return max(0, high - start)


class LagRow(NamedTuple):
    """One partition of a consumer group."""

    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group never committed here
    high: int
    lag: int


# -- the whole deployment ---------------------------------------------------------------


@dataclass(frozen=True)
class StatusLimits:
    """Bounds the verdict applies (``health`` settings)."""

    stale_after_ms: int = 30_000
    max_lag: int = 100_000
    max_close_delay_ms: int = 300_000
    dead_letters_recent_ms: int = 600_000


@dataclass
class StatusReport:
    """What ``monitoring status`` gathered (``monitoring.ops.status_kafka``)."""

    now_ms: int
    heartbeats: list[Heartbeat] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # status-topic records, by reason
    lag: list[LagRow] = field(default_factory=list)
    dead_letters: dict[str, int] = field(default_factory=dict)  # reason -> count, last hour
    dead_letters_recent: int = 0  # of those, within dead_letters_recent_ms
    dead_letters_partial: str = ""  # why the scan stopped early ("": read all)
    errors: list[str] = field(default_factory=list)  # what could not be gathered

    def closed_through(self) -> dict[int, int]:
        """The newest closed-through mark of each samples partition, over the workers."""
        out: dict[int, int] = {}
        for hb in self.live():
            marks = hb.figures.get("aggregation.closed_through_ms")
            if not isinstance(marks, Mapping):
                continue
            for p, v in marks.items():
                key, number = str(p), isinstance(v, int) and not isinstance(v, bool)
                if key.isascii() and key.isdigit() and number:
                    out[int(key)] = max(out.get(int(key), v), v)
        return dict(sorted(out.items()))

    def live(self) -> list[Heartbeat]:
        """Heartbeats not replaced by a newer process of the same kind on the same host."""
        return [hb for hb in self.heartbeats if not replaced(hb, self.heartbeats)]


def age_ms(hb: Heartbeat, now_ms: int) -> int:
    """How long ago the heartbeat was sent (0 if from the future)."""
    return max(0, now_ms - hb.sent_ms)


def replaced(hb: Heartbeat, all_: Sequence[Heartbeat]) -> bool:
    """A process restarted under a new id: a heartbeat of the same kind and host whose
    process started after this one was last heard of."""
    return any(
        o.id != hb.id and o.kind == hb.kind and o.host == hb.host and o.started_ms > hb.sent_ms
        for o in all_
    )


def duration_text(ms_: float) -> str:
    """``45 s``, ``12 min``, ``3.2 h``.

    >>> duration_text(45_000), duration_text(720_000), duration_text(11_520_000)
    ('45 s', '12 min', '3.2 h')
    """
    s = max(0.0, ms_) / 1000
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _sum_figure(hbs: Iterable[Heartbeat], key: str) -> float:
    total = 0.0
    for hb in hbs:
        v = hb.figures.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            total += v
    return total


def judge(report: StatusReport, limits: StatusLimits) -> list[CheckResult]:
    """OK / WARN / FAIL lines of the deployment (``ops.checks``: exit 1 on any FAIL).

    FAIL: a stale heartbeat (a process not heard of for ``stale_after_ms``, not
    replaced), a group partition lagging over ``max_lag``, a store not ``ok``, a
    samples partition closed through more than ``max_close_delay_ms`` ago, no
    heartbeat at all, what could not be gathered. WARN: a process not ready, status
    records skipped, dead letters within ``dead_letters_recent_ms``.
    """
    now = report.now_ms
    out: list[CheckResult] = []
    live = report.live()
    stale = [hb for hb in live if age_ms(hb, now) > limits.stale_after_ms]
    if not report.heartbeats:
        out.append(
            CheckResult(
                "processes",
                Status.FAIL,
                "no heartbeat on the status topic",
                "start the processes (they publish every health.heartbeat_interval)",
            )
        )
    elif stale:
        names = ", ".join(f"{hb.id} ({duration_text(age_ms(hb, now))})" for hb in stale[:10])
        out.append(
            CheckResult(
                "processes",
                Status.FAIL,
                f"{len(stale)} of {len(live)} stale: {names}",
                "a process stopped without saying so (killed, hung, partitioned): restart it, "
                "or `monitoring status --forget ID` if it is gone for good",
            )
        )
    else:
        out.append(CheckResult("processes", Status.OK, f"{len(live)} alive"))
    unready = [hb for hb in live if not hb.ready and hb not in stale]
    if unready:
        why = "; ".join(f"{hb.id}: {', '.join(hb.reasons) or '?'}" for hb in unready[:10])
        out.append(CheckResult("ready", Status.WARN, f"{len(unready)} not ready: {why}"))
    else:
        out.append(CheckResult("ready", Status.OK, "every live process is ready"))
    if report.skipped:
        detail = ", ".join(f"{r}: {n}" for r, n in sorted(report.skipped.items()))
        out.append(CheckResult("status topic", Status.WARN, f"records skipped ({detail})"))
    over = [r for r in report.lag if r.lag > limits.max_lag]
    total = sum(r.lag for r in report.lag)
    if over:
        worst = max(over, key=lambda r: r.lag)
        out.append(
            CheckResult(
                "lag",
                Status.FAIL,
                f"{len(over)} partition(s) over {limits.max_lag}: worst {worst.group} "
                f"{worst.topic}[{worst.partition}] {worst.lag}",
                "the group's consumers are down or too slow: start more (up to the "
                "partitions), or look at their health",
            )
        )
    else:
        groups = len({r.group for r in report.lag})
        out.append(CheckResult("lag", Status.OK, f"{total} records behind over {groups} group(s)"))
    stores = [hb for hb in live if hb.kind == "store" and hb not in stale]
    bad_stores = [hb for hb in stores if hb.figures.get("status", "ok") != "ok"]
    if bad_stores:
        detail = ", ".join(f"{hb.id}: {hb.figures.get('status')}" for hb in bad_stores)
        out.append(
            CheckResult(
                "store",
                Status.FAIL,
                detail,
                "ClickHouse refuses or hangs: `monitoring doctor`, the store's log",
            )
        )
    elif stores:
        pending = _sum_figure(stores, "pending_rows")
        failures = _sum_figure(stores, "insert_failures")
        out.append(
            CheckResult(
                "store", Status.OK, f"{pending:.0f} rows buffered, {failures:.0f} insert failures"
            )
        )
    closed = report.closed_through()
    behind = {p: now - t for p, t in closed.items() if now - t > limits.max_close_delay_ms}
    if behind:
        detail = ", ".join(f"{p}: {duration_text(d)} ago" for p, d in sorted(behind.items()))
        out.append(
            CheckResult(
                "windows",
                Status.FAIL,
                f"samples partitions closed through long ago: {detail}",
                "no samples arrive there, or the worker is stuck: its health and lag",
            )
        )
    elif closed:
        oldest = max(now - t for t in closed.values())
        out.append(
            CheckResult(
                "windows",
                Status.OK,
                f"{len(closed)} samples partitions closing, the oldest {duration_text(oldest)} ago",
            )
        )
    evaluators = [hb for hb in live if hb.kind == "evaluator" and hb not in stale]
    ends = [v for hb in evaluators if (v := _num(hb.figures.get("last_evaluated_ms")))]
    if ends:
        out.append(
            CheckResult(
                "alerting",
                Status.OK,
                f"last end evaluated {duration_text(now - max(ends))} ago",
            )
        )
    elif evaluators:
        out.append(CheckResult("alerting", Status.WARN, "no window end evaluated yet"))
    notifiers = [hb for hb in live if hb.kind == "notifier" and hb not in stale]
    failing = sorted(
        {str(r) for hb in notifiers for r in _list(hb.figures.get("failing_receivers"))}
    )
    queue = _sum_figure(notifiers, "deliveries_in_flight")
    if failing:
        out.append(
            CheckResult(
                "notifier",
                Status.WARN,
                f"{queue:.0f} deliveries in flight; failing receivers: {', '.join(failing[:10])}",
                "the receiver's endpoint refuses or times out: `monitoring doctor` (receivers)",
            )
        )
    elif notifiers:
        out.append(CheckResult("notifier", Status.OK, f"{queue:.0f} deliveries in flight"))
    n_dead = sum(report.dead_letters.values())
    partial = f" (partial: {report.dead_letters_partial})" if report.dead_letters_partial else ""
    if report.dead_letters_recent:
        top = ", ".join(
            f"{r}: {n}" for r, n in sorted(report.dead_letters.items(), key=lambda x: -x[1])[:5]
        )
        out.append(
            CheckResult(
                "dead letters",
                Status.WARN,
                f"{report.dead_letters_recent} in the last "
                f"{limits.dead_letters_recent_ms // 60_000} min, {n_dead} in the hour ({top})"
                + partial,
                "`monitoring dlq list --since 1h`, then fix and `monitoring dlq replay`",
            )
        )
    else:
        out.append(CheckResult("dead letters", Status.OK, f"{n_dead} in the last hour{partial}"))
    for e in report.errors:
        out.append(CheckResult("gathering", Status.FAIL, e, "`monitoring doctor`"))
    return out


def to_json(report: StatusReport, results: Sequence[CheckResult]) -> dict[str, Any]:
    """``monitoring status --json``: the verdict, then everything it was made of."""
    from monitoring.ops.checks import worst

    return {
        "status": worst(results).value,
        "checks": [r.as_dict() for r in results],
        "now_ms": report.now_ms,
        "processes": [
            {**hb.to_json(), "replaced": replaced(hb, report.heartbeats)}
            for hb in report.heartbeats
        ],
        "status_records_skipped": report.skipped,
        "lag": [r._asdict() for r in report.lag],
        "closed_through_ms": {str(p): t for p, t in report.closed_through().items()},
        "dead_letters_last_hour": report.dead_letters,
        "dead_letters_recent": report.dead_letters_recent,
        "dead_letters_partial": report.dead_letters_partial,
        "errors": report.errors,
    }


# -- the status as the pipeline's own series ------------------------------------------

Series = tuple[str, dict[str, str], float, str]
"""(name, labels, value, kind) of one exported sample."""


def _num(v: Any) -> float | None:
    if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def series_of(report: StatusReport, limits: StatusLimits, dead_letters_total: int) -> list[Series]:
    """The report as samples for the samples topic (``monitoring status --export``):

    - ``kafka_consumergroup_lag{consumergroup,topic,partition}`` (kafka_exporter's name);
    - ``monitoring_dead_letters_total`` (COUNTER: the dead-letter topic's end offsets)
      and ``monitoring_dead_letters_last_hour{reason}``;
    - ``monitoring_process_up{kind,process}`` (0: stale) and ``monitoring_process_ready``;
    - ``monitoring_store_ok{process}`` (1: its status is ok), ``monitoring_store_pending_rows``;
    - ``monitoring_closed_through_seconds{partition}`` and
      ``monitoring_close_delay_seconds{partition}`` (now minus it);
    - ``monitoring_alerting_last_evaluated_seconds{process}``,
      ``monitoring_notifier_queue{process}``, ``monitoring_notifier_failing_receivers``.

    >>> r = StatusReport(now_ms=10_000, lag=[LagRow("g", "t", 0, 5, 9, 4)])
    >>> name, labels, value, kind = series_of(r, StatusLimits(), 7)[0]
    >>> name, labels["partition"], value, kind
    ('kafka_consumergroup_lag', '0', 4.0, 'GAUGE')
    """
    out: list[Series] = [
        (
            "kafka_consumergroup_lag",
            {"consumergroup": r.group, "topic": r.topic, "partition": str(r.partition)},
            float(r.lag),
            "GAUGE",
        )
        for r in report.lag
    ]
    out.append(("monitoring_dead_letters_total", {}, float(dead_letters_total), "COUNTER"))
    for reason, n in sorted(report.dead_letters.items()):
        out.append(("monitoring_dead_letters_last_hour", {"reason": reason}, float(n), "GAUGE"))
    now = report.now_ms
    for hb in report.live():
        who = {"kind": hb.kind, "process": hb.id}
        up = age_ms(hb, now) <= limits.stale_after_ms
        out.append(("monitoring_process_up", who, 1.0 if up else 0.0, "GAUGE"))
        out.append(("monitoring_process_ready", who, 1.0 if up and hb.ready else 0.0, "GAUGE"))
        f = hb.figures
        if hb.kind == "store":
            ok = up and f.get("status", "ok") == "ok"
            out.append(("monitoring_store_ok", {"process": hb.id}, 1.0 if ok else 0.0, "GAUGE"))
            pending = _num(f.get("pending_rows"))
            if pending is not None:
                out.append(("monitoring_store_pending_rows", {"process": hb.id}, pending, "GAUGE"))
        last = _num(f.get("last_evaluated_ms"))
        if last is not None and last > 0:
            out.append(
                (
                    "monitoring_alerting_last_evaluated_seconds",
                    {"process": hb.id},
                    last / 1000,
                    "GAUGE",
                )
            )
        queue = _num(f.get("deliveries_in_flight"))
        if queue is not None:
            out.append(("monitoring_notifier_queue", {"process": hb.id}, queue, "GAUGE"))
        failing = f.get("failing_receivers")
        if isinstance(failing, list):
            out.append(
                (
                    "monitoring_notifier_failing_receivers",
                    {"process": hb.id},
                    float(len(failing)),
                    "GAUGE",
                )
            )
    for p, t in report.closed_through().items():
        labels = {"partition": str(p)}
        out.append(("monitoring_closed_through_seconds", labels, t / 1000, "GAUGE"))
        out.append(("monitoring_close_delay_seconds", labels, max(0, now - t) / 1000, "GAUGE"))
    return out
