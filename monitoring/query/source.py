"""The PromQL engine's :class:`~monitoring.promql.Source` over the store's tables.

A selector is answered in two read-only statements, every user string bound as a
server-side parameter (never spliced into SQL):

1. **Series**: ``series`` grouped by ``series_id``, filtered by the matchers
   (``__name__`` is the ``name`` column, a label is ``labels['x']``, which is ``''`` when
   absent, as Prometheus treats a missing label), kept when its first/last seen overlap
   the interval. Regex matchers run in ClickHouse's RE2 (the engine Prometheus's Go
   regexps share their syntax with) anchored as Prometheus anchors them,
   ``^(?-s:re)$`` (``.`` does not match a newline, as in Go). At most ``max_series + 1``
   rows come back: more is :class:`TooLarge` before any sample is read.
2. **Samples**: one statement for every chosen series, in the table's key order,
   columnar (Arrow -> numpy), split per series; a sample stored twice (a replay not
   merged yet) counts once. The engine counts: the statement runs with
   ``max_result_rows`` = what is left of the query's sample budget and stops past it
   (:class:`TooLarge`), so an oversized answer is never fetched nor held.

**Raw samples or aggregates** (:meth:`StoreSource.plan`): raw samples keep
``storage.retention.samples`` (the ``samples`` TTL, 7 days by default), the windowed
aggregates 30 days.

- When the query's ``step`` is at least :data:`DOWNSAMPLE_FACTOR` windows of an
  aggregate size the series have, the largest such window is read instead of raw
  samples: each window's ``last`` value stamped at its ``window_end``. A range selector
  as long as the step (Grafana's ``$__rate_interval`` is) still sees at least ten
  points of each series.
- A client may allow windows up to ``max_resolution_ms`` whatever the step
  (``max_source_resolution``, the name Thanos's query API gives it): the largest such
  window answers instead of raw samples. The dashboards ask for half their step, so a
  24-hour panel at a 2-minute step reads 1-minute windows, a quarter of the raw points
  at a 15 s scrape.
- Else raw samples; the part of the interval older than the raw retention is read
  from the smallest window size.

Either way the response says so in its warnings. Counters (kind ``COUNTER`` or
``HISTOGRAM_BUCKET``) whose windows carry Aggregate v2's ``increase`` are read as a
counter without resets ending at the last window's ``last`` (``Columns.
counters_from_increase``), so ``rate``/``increase`` count a reset inside a window too.
Windows without it (Aggregate v1) give their ``last``: a reset between windows is seen,
one followed by a climb above the previous window's last inside one window is not.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from clickhouse_connect.driver.client import Client

from monitoring.promql import Matcher, SelectHint, SeriesData, TooLarge
from monitoring.promql.engine import TOO_MANY_SAMPLES
from monitoring.query import thinning

DOWNSAMPLE_FACTOR = 10  # aggregates once the step spans this many windows
SERIES_MARGIN_MS = 3_600_000  # series.last_seen lags a live series (storage.series_refresh)
DEFAULT_RAW_RETENTION_MS = 7 * 86_400_000
WINDOW_PROBE = 8  # series asked which window sizes are stored
COUNTER_KINDS = frozenset({"COUNTER", "HISTOGRAM_BUCKET"})
MIN_MS = 0  # DateTime64(3) holds 1900-2299; the store holds nothing before 1970
MAX_MS = 10_413_791_999_999  # 2299-12-31T23:59:59.999Z
_WINDOWS_WHERE = (
    "series_id IN {ids:Array(UInt64)} AND window_ms = {w:UInt32} "
    "AND window_start >= fromUnixTimestamp64Milli({lo:Int64} - {w:Int64}) "
    "AND window_start <= fromUnixTimestamp64Milli({hi:Int64} - {w:Int64})"
)
_TTL = re.compile(r"toIntervalSecond\((\d+)\)")
_WORD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Part:
    """One read of a plan: raw samples (``window_ms`` 0) or one aggregate window size,
    over ``[start_ms, end_ms]``."""

    window_ms: int
    start_ms: int
    end_ms: int


def raw_retention_ms(client: Client, settings: dict[str, Any] | None = None) -> int:
    """The ``samples`` table's TTL in ms (storage.retention.samples at migration time).

    Read from the table's DDL, so a store serving queries needs no other settings; the
    default retention when the table or its TTL cannot be read.
    """
    try:
        rows = client.query(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = 'samples'",
            settings=settings,
        ).result_rows
    except Exception:
        return DEFAULT_RAW_RETENTION_MS
    m = _TTL.search(str(rows[0][0])) if rows else None
    return int(m.group(1)) * 1000 if m else DEFAULT_RAW_RETENTION_MS


def settings_clause(settings: dict[str, Any]) -> str:
    """A SETTINGS clause of our own settings (integers and plain words only).

    >>> settings_clause({"max_result_rows": 5, "result_overflow_mode": "throw", "readonly": 1})
    "max_result_rows = 5, result_overflow_mode = 'throw', readonly = 1"
    >>> settings_clause({"readonly": "1\\n"})  # fullmatch: $ would take a final newline
    Traceback (most recent call last):
    ValueError: setting readonly='1\\n' is not a plain value
    """
    out = []
    for k, v in settings.items():
        if not _WORD.fullmatch(k) or not (isinstance(v, int) or _WORD.fullmatch(str(v))):
            raise ValueError(f"setting {k}={v!r} is not a plain value")
        out.append(f"{k} = {v}" if isinstance(v, int) else f"{k} = '{v}'")
    return ", ".join(out)


def _drain(client: Client) -> None:
    """After a failed Arrow query, chDB hands its leftover bytes to the next query
    (which fails to decode them): let a throw-away query take them."""
    with contextlib.suppress(Exception):
        client.query("SELECT 1")


def clamp_ms(t_ms: int) -> int:
    """``t_ms`` within what DateTime64(3) holds (and the store keeps)."""
    return min(max(int(t_ms), MIN_MS), MAX_MS)


def _ms(t_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_ms / 1000))


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def series_filter(matchers: Sequence[Matcher], params: dict[str, Any]) -> str:
    """The WHERE condition of ``matchers`` on ``series``, binding values into ``params``.

    >>> p: dict[str, Any] = {}
    >>> series_filter([Matcher("__name__", "=", "up"), Matcher("job", "=~", "a|b")], p)
    'name = {p0:String} AND match(labels[{p1:String}], {p2:String})'
    >>> p["p2"]
    '^(?-s:a|b)$'
    """
    conds: list[str] = []
    for m in matchers:
        if m.name == "__name__":
            column = "name"
        else:
            key = f"p{len(params)}"
            params[key] = m.name
            column = f"labels[{{{key}:String}}]"
        key = f"p{len(params)}"
        if m.op in ("=~", "!~"):
            params[key] = f"^(?-s:{m.value})$"
            cond = f"match({column}, {{{key}:String}})"
            conds.append(cond if m.op == "=~" else f"NOT {cond}")
        else:
            params[key] = m.value
            conds.append(f"{column} {m.op} {{{key}:String}}")
    return " AND ".join(conds) or "1"


class StoreSource:
    """Series and samples of one query (a fresh source per query: it counts the
    query's samples against ``max_samples`` and collects its warnings)."""

    def __init__(
        self,
        client: Client,
        settings: dict[str, Any] | None = None,
        *,
        step_ms: int = 0,
        now_ms: int | None = None,
        raw_retention_ms: int = DEFAULT_RAW_RETENTION_MS,
        max_series: int = 10_000,
        max_samples: int = 50_000_000,
        max_resolution_ms: int = 0,
    ) -> None:
        self.client = client
        self.max_resolution_ms = max(0, max_resolution_ms)
        self.settings = settings
        self.step_ms = step_ms
        self.now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.raw_retention_ms = raw_retention_ms
        self.max_series = max_series
        self.max_samples = max_samples
        self.samples_loaded = 0
        self.warnings: list[str] = []
        self.counters: set[int] = set()  # series ids whose kind is a counter

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def series(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, limit: int | None = None
    ) -> dict[int, dict[str, str]]:
        """``series_id -> labels`` (with ``__name__``) of the series the matchers select
        and that were seen in ``[start_ms, end_ms]``; TooLarge past ``limit`` series."""
        limit = self.max_series if limit is None else limit
        params: dict[str, Any] = {}
        where = series_filter(matchers, params)
        params |= {
            "lo": clamp_ms(start_ms - SERIES_MARGIN_MS),
            "hi": clamp_ms(end_ms),
            "limit": limit + 1,
        }
        rows = self._query(
            "SELECT series_id, any(name), any(labels), anyLast(kind) FROM series "
            f"WHERE {where} GROUP BY series_id "
            "HAVING max(last_seen) >= fromUnixTimestamp64Milli({lo:Int64}) "
            "AND min(first_seen) <= fromUnixTimestamp64Milli({hi:Int64}) "
            "LIMIT {limit:UInt64}",
            params,
        ).result_rows
        if len(rows) > limit:
            raise TooLarge(f"the query selects more than {limit} series: narrow its label matchers")
        out: dict[int, dict[str, str]] = {}
        for sid, name, labels, kind in rows:
            named = {str(k): str(v) for k, v in labels.items() if v != ""}
            named["__name__"] = str(name)
            out[int(sid)] = named
            if kind in COUNTER_KINDS:
                self.counters.add(int(sid))
        return out

    def select(
        self,
        matchers: list[Matcher],
        start_ms: int,
        end_ms: int,
        hint: SelectHint | None = None,
    ) -> list[SeriesData]:
        """The series ``matchers`` select with their samples in ``[start_ms, end_ms]``;
        with a ``hint`` that thins (see ``monitoring.query.thinning``), only the ones
        the evaluation looks at."""
        found = self.series(matchers, start_ms, end_ms)
        if not found:
            return []
        ids = sorted(found)
        thin = hint if hint is not None and hint.thins() else None
        parts = self.plan(ids, start_ms, end_ms)
        cols = Columns.concat([self._fetch(ids, part, thin) for part in parts])
        return cols.split(found)

    def plan(self, ids: list[int], start_ms: int, end_ms: int) -> list[Part]:
        """Which reads answer ``[start_ms, end_ms]`` for ``ids`` (see the module doc)."""
        horizon = self.now_ms - self.raw_retention_ms
        allowed = self.max_resolution_ms
        wants_windows = (
            self.step_ms >= DOWNSAMPLE_FACTOR * 1000 or start_ms < horizon or allowed >= 1000
        )
        windows = self.windows(ids, start_ms, end_ms) if wants_windows else []
        coarse = [w for w in windows if w * DOWNSAMPLE_FACTOR <= self.step_ms]
        asked = [w for w in windows if w <= allowed]
        if coarse or asked:
            w = max(coarse + asked)
            why = (
                f"step {_duration(self.step_ms)} spans at least {DOWNSAMPLE_FACTOR} windows "
                f"of {_duration(w)}"
                if w in coarse
                else f"max_source_resolution {_duration(allowed)} allows {_duration(w)} windows"
            )
            self._warn(
                f"{why}: values are the stored aggregates (the last value of each "
                f"{_duration(w)} window, at its end), not raw samples"
            )
            return [Part(w, start_ms, end_ms)]
        parts = []
        if start_ms < horizon and windows:
            w = min(windows)
            parts.append(Part(w, start_ms, min(end_ms, horizon - 1)))
            self._warn(
                f"raw samples are kept {_duration(self.raw_retention_ms)}: before "
                f"{_ms(horizon)} values are the stored aggregates (the last value of each "
                f"{_duration(w)} window, at its end)"
            )
        if end_ms >= horizon or not windows:
            parts.append(Part(0, max(start_ms, horizon) if windows else start_ms, end_ms))
        return parts

    def windows(self, ids: list[int], start_ms: int, end_ms: int) -> list[int]:
        """The aggregate window sizes stored in the interval, asked of a few of ``ids``
        (every series gets the same sizes: ``aggregation.windows``) on the table's key."""
        rows = self._query(
            "SELECT DISTINCT window_ms FROM aggregates WHERE series_id IN {ids:Array(UInt64)} "
            "AND window_start >= fromUnixTimestamp64Milli({lo:Int64}) - INTERVAL 1 DAY "
            "AND window_start <= fromUnixTimestamp64Milli({hi:Int64})",
            {"ids": ids[:WINDOW_PROBE], "lo": clamp_ms(start_ms), "hi": clamp_ms(end_ms)},
        ).result_rows
        return sorted(int(r[0]) for r in rows)

    def _query(self, sql: str, params: dict[str, Any]) -> Any:
        return self.client.query(sql, parameters=params, settings=self.settings)

    def _fetch(self, ids: list[int], part: Part, thin: SelectHint | None = None) -> Columns:
        """One read of ``part``, in key order, at most the rest of the sample budget;
        only what ``thin`` keeps when given."""
        params = {"ids": ids, "lo": clamp_ms(part.start_ms), "hi": clamp_ms(part.end_ms)}
        if thin is not None:
            params |= thinning.params(thin)
        if not part.window_ms:
            where = (
                "series_id IN {ids:Array(UInt64)} "
                "AND ts >= fromUnixTimestamp64Milli({lo:Int64}) "
                "AND ts <= fromUnixTimestamp64Milli({hi:Int64})"
            )
            t = "toUnixTimestamp64Milli(ts)"
            if thin is not None:
                where += f" AND {thinning.in_reach(t)}"
            sql = (
                f"SELECT series_id, {t} AS t, value AS v FROM samples WHERE {where} "
                "ORDER BY series_id, ts, value"
            )
            cols = Columns.of(self._arrow(sql, params))
            return cols.thinned(thin) if thin is not None and thin.instant else cols
        # A window's point is its last value at its end (window_start + w). ``increase``
        # only when counters are asked for, ``version`` only when a window was stored
        # twice (re-emitted, not merged yet): both cost a column read.
        counters = bool(self.counters.intersection(ids))
        # a counter's points come from every window's increase: thinned after that
        reach = thin if thin is not None and not counters else None
        cols = self._windows(params, part.window_ms, counters, False, reach)
        if cols.has_duplicates():
            cols = self._windows(params, part.window_ms, counters, True, reach)
        cols = cols.counters_from_increase(self.counters)
        if thin is None or (reach is not None and not thin.instant):
            return cols
        return cols.thinned(thin)

    def _windows(
        self,
        params: dict[str, Any],
        w: int,
        counters: bool,
        with_version: bool,
        thin: SelectHint | None = None,
    ) -> Columns:
        extra = (", increase" if counters else "") + (", version" if with_version else "")
        t = "toUnixTimestamp64Milli(window_start) + {w:Int64}"
        where = _WINDOWS_WHERE + (f" AND {thinning.in_reach(t)}" if thin is not None else "")
        table = self._arrow(
            f"SELECT series_id, {t} AS t, last AS v{extra} FROM aggregates WHERE {where} "
            "ORDER BY series_id, window_start",
            {**params, "w": w},
            recount=with_version,
        )
        cols = Columns.of(table)
        if counters:
            increase = table.column("increase").to_numpy(zero_copy_only=False)
            cols = Columns(cols.sid, cols.ts, cols.values, increase.astype(np.float64))
        if with_version:
            cols = cols.latest_version(table.column("version").to_numpy())
        return cols

    def _arrow(self, sql: str, params: dict[str, Any], recount: bool = False) -> Any:
        """``sql`` as an Arrow table, stopped by the engine past the sample budget (so an
        oversized answer is never fetched); counted against the budget."""
        budget = self.max_samples - self.samples_loaded
        settings = {k: v for k, v in (self.settings or {}).items() if k != "readonly"}
        settings |= {
            "max_result_rows": budget + 1,
            "max_result_bytes": (budget + 1) * 48,
            "result_overflow_mode": "throw",
            # the answer stays in this process: compressing it (lz4_frame by default) and
            # decompressing it cost a quarter of a million-point read
            "output_format_arrow_compression_method": "none",
        }
        if self.settings is None or "readonly" in self.settings:
            # last: the limits are set before it. Not for a user that is read-only
            # already (ReadOnlyQueries.settings): a readonly=2 user may not set it.
            settings["readonly"] = 1
        try:
            # The settings go in the statement: clickhouse-connect's chDB backend applies
            # a raw query's settings with SET and cannot restore them after readonly=1.
            table = self.client.query_arrow(f"{sql} SETTINGS {settings_clause(settings)}", params)
        except Exception as e:
            _drain(self.client)
            if "TOO_MANY_ROWS_OR_BYTES" in str(e) or "Limit for result exceeded" in str(e):
                raise TooLarge(
                    f"{TOO_MANY_SAMPLES} (more than {self.max_samples}): shorten its range "
                    "or narrow its selectors"
                ) from None
            raise
        if not recount:
            self.samples_loaded += table.num_rows
        return table


@dataclass(frozen=True)
class Columns:
    """Fetched samples of many series: ids, timestamps (ms), values; for aggregates
    also each window's counter ``increase`` (NaN where the row has none)."""

    sid: np.ndarray
    ts: np.ndarray
    values: np.ndarray
    increase: np.ndarray | None = None

    @staticmethod
    def concat(parts: list[Columns]) -> Columns:
        """Parts of one plan, in series then time order."""
        if len(parts) == 1:
            return parts[0]
        sid = np.concatenate([p.sid for p in parts])
        ts = np.concatenate([p.ts for p in parts])
        order = np.lexsort((ts, sid))
        return Columns(sid[order], ts[order], np.concatenate([p.values for p in parts])[order])

    def _same_as_next(self) -> np.ndarray:
        return (self.sid[1:] == self.sid[:-1]) & (self.ts[1:] == self.ts[:-1])

    @staticmethod
    def of(table: Any) -> Columns:
        """The ``series_id``, ``t`` and ``v`` columns of an Arrow table."""
        return Columns(
            table.column("series_id").to_numpy().astype(np.uint64, copy=False),
            table.column("t").to_numpy().astype(np.int64, copy=False),
            table.column("v").to_numpy().astype(np.float64, copy=False),
        )

    def has_duplicates(self) -> bool:
        """Whether a timestamp of a series comes twice."""
        return bool(self._same_as_next().any())

    def latest_version(self, version: np.ndarray) -> Columns:
        """Of a window stored more than once (re-emitted), the last emitted version
        last (``split`` keeps it)."""
        order = np.lexsort((version, self.ts, self.sid))
        inc = None if self.increase is None else self.increase[order]
        return Columns(self.sid[order], self.ts[order], self.values[order], inc)

    def counters_from_increase(self, counters: set[int]) -> Columns:
        """Counters whose windows all carry ``increase`` (Aggregate v2) as a counter
        without resets that ends at the last window's ``last``: point k is
        ``last[-1] - sum(increase[k+1:])``. ``rate``/``increase`` over it count every
        reset, even one inside a window; a counter's value shown after a reset reads
        higher than it was. Other series keep each window's ``last``."""
        if self.increase is None or not counters or not len(self.sid):
            return self
        values = self.values.copy()
        bounds = np.flatnonzero(self.sid[1:] != self.sid[:-1]) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        ends = np.concatenate((bounds, [len(self.sid)])).tolist()
        for a, b in zip(starts, ends, strict=True):
            inc = self.increase[a:b]
            if int(self.sid[a]) not in counters or np.isnan(inc).any():
                continue
            cs = np.cumsum(inc)
            values[a:b] = values[b - 1] - (cs[-1] - cs)
        return Columns(self.sid, self.ts, values, self.increase)

    def thinned(self, hint: SelectHint) -> Columns:
        """Only the points ``hint`` keeps (of equal timestamps the last, as ``split``)."""
        keep = hint.keep(self.ts, self.sid)
        inc = None if self.increase is None else self.increase[keep]
        return Columns(self.sid[keep], self.ts[keep], self.values[keep], inc)

    def split(self, found: dict[int, dict[str, str]]) -> list[SeriesData]:
        """Per-series data; of equal timestamps the last one is kept (a replayed sample
        not merged yet, or the later version of a window)."""
        if not len(self.sid):
            return []
        same = self._same_as_next()
        sid, ts, vals = self.sid, self.ts, self.values
        if same.any():  # else no copy of a million points
            keep = np.ones(len(sid), bool)
            keep[:-1] = ~same
            sid, ts, vals = sid[keep], ts[keep], vals[keep]
        bounds = np.flatnonzero(sid[1:] != sid[:-1]) + 1
        starts = np.concatenate(([0], bounds)).tolist()
        ends = np.concatenate((bounds, [len(sid)])).tolist()
        return [
            SeriesData(dict(found[int(sid[a])]), ts[a:b], vals[a:b])
            for a, b in zip(starts, ends, strict=True)
        ]
