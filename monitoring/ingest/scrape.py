"""Prometheus scraping: targets' /metrics to the samples topic (``monitoring scrape``).

One asyncio loop (``httpx.AsyncClient``) scrapes every target at its own phase of its
job's interval (``Ticker``: deadlines without drift; a tick the previous scrape overran
is skipped and counted). A scrape is what Prometheus 2.42 does with one:

* GET with Prometheus' ``Accept`` header and ``X-Prometheus-Scrape-Timeout-Seconds``,
  the whole scrape bounded by ``scrape_timeout``, the (decoded) body by
  ``body_size_limit`` (default ``scrape.max_body_bytes``); a non-200 answer, a timeout,
  a body over the limit or a parse error fails the scrape.
* Samples take the scrape's start time unless the body gives one and
  ``honor_timestamps`` is on; target labels are added (``honor_labels: false``: a
  clashing exposed label is kept as ``exported_<name>``; ``true``: the exposed value
  wins), then ``metric_relabel_configs`` run.
* More samples than ``sample_limit`` after relabeling fails the scrape: nothing of it
  is sent.
* Every scrape writes ``up`` (1 or 0), ``scrape_duration_seconds``,
  ``scrape_samples_scraped`` and ``scrape_samples_post_metric_relabeling`` with the
  target's labels at the scrape's timestamp.

Processing (parse, labels, push) runs on one worker thread, which hands samples to the
SDK's bounded buffer through ``Outlet``: when the buffer is full the push waits, so the
scrapes behind it wait too (and their missed intervals are counted) instead of dropping;
what still cannot be sent is counted as ``unsent``.

Staleness, as Prometheus: a series the previous scrape of a target had and this one
has not gets a staleness marker (``STALE_NAN``) at this scrape's time; a failed scrape
marks every series of the last good one; a target gone from service discovery gets
markers for its series and its report series. Series with a timestamp of their own on
the page are not tracked (Prometheus' rule). See docs/ingest.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.config import ScrapeSettings
from monitoring.ingest.exposition import ACCEPT, Scraped, parse_lazy, resolve
from monitoring.ingest.outlet import Handle, Outlet, Point
from monitoring.ingest.relabel import Rule, process
from monitoring.ingest.scrape_config import ScrapeConfig, ScrapeFile
from monitoring.ingest.targets import JobTargets, Target
from monitoring.ingest.ticker import Ticker
from monitoring.log import get_logger
from monitoring.metrics.samples import STALE_NAN, InvalidSample, Limits
from monitoring.wire.sample_encoding import DEFAULT_LIMITS

log = get_logger("ingest.scrape")

USER_AGENT = "monitoring-scraper/0.1"
MAX_CACHED_KEY = 4096  # characters of a series' text; longer ones are read every scrape
_CHUNK = 64 * 1024


class ScrapeError(Exception):
    """A failed scrape; ``reason`` is one of a small fixed set (a metrics label)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class ScrapeResult:
    """What one scrape gave: samples sent (report series apart), and the counts."""

    samples: int
    up: bool
    error: str
    scraped: int
    post_relabel: int
    duration_s: float


def target_points(
    samples: Iterable[Scraped],
    target_labels: dict[str, str],
    honor_labels: bool,
    rules: list[Rule],
) -> list[Point]:
    """Samples with the target's labels merged (Prometheus' ``mutateSampleLabels``) and
    metric relabeling applied; ``__name__`` carries the name through the rules."""
    out: list[Point] = []
    append = out.append
    for s in samples:
        lset = s.labels or {}
        if honor_labels:
            merged = {**target_labels, **{k: v for k, v in lset.items() if v}}
        else:
            merged = dict(lset)
            conflicts = [(k, merged[k]) for k in target_labels if merged.get(k)]
            merged.update(target_labels)
            # resolved after every target label is set, shortest name first (Prometheus'
            # resolveConflictingExposedLabels)
            for k, old in sorted(conflicts, key=lambda c: len(c[0])):
                name = "exported_" + k
                while merged.get(name):
                    name = "exported_" + name
                merged[name] = old
        if rules:
            merged["__name__"] = s.name
            res = process(merged, rules)
            if res is None:
                continue
            name = res.pop("__name__", "")
            if not name:
                continue
            merged = res
        else:
            name = s.name
            merged = {k: v for k, v in merged.items() if v}
        append(Point(name, merged, s.kind, s.value, s.timestamp_ms))
    return out


def report_points(
    labels: dict[str, str], up: bool, duration_s: float, scraped: int, post: int
) -> list[Point]:
    """The series Prometheus writes for every scrape (at the scrape's timestamp)."""
    return [
        Point("up", labels, "GAUGE", 1.0 if up else 0.0),
        Point("scrape_duration_seconds", labels, "GAUGE", duration_s),
        Point("scrape_samples_scraped", labels, "GAUGE", float(scraped)),
        Point("scrape_samples_post_metric_relabeling", labels, "GAUGE", float(post)),
    ]


_MISSING = object()
_INVALID = object()  # a cached series the samples contract refused


def prepare(
    samples: list[Scraped],
    tl: _TargetLoop,
    series: Callable[..., Handle],
    start_ms: int,
    limits: Limits = DEFAULT_LIMITS,
    seen: dict[Any, Handle] | None = None,
) -> tuple[list[tuple[Handle, float, int]], int]:
    """Samples to (series handle, value, timestamp) items and the count refused.

    An exposed series (name and labels as the page gives them) is labelled, relabeled
    and validated once, then found in the target's cache: a page that repeats its
    series costs a lookup per sample. ``None`` cached: dropped by relabeling. A
    timestamp the page gives must lie where the samples contract (``limits``) allows,
    from ``min_timestamp_ms`` to ``max_future_skew_ms`` past the scrape: else refused.
    ``seen`` gets the series sent at the scrape's time (exposed key -> handle), the ones
    whose staleness is tracked.
    """
    job = tl.job
    cache = tl.cache
    target_labels = tl.target.label_dict
    rules = tl.jt.metric_rules
    honor_ts = job.honor_timestamps
    out: list[tuple[Handle, float, int]] = []
    append = out.append
    invalid = 0
    first_refusal = ""
    lo, hi = limits.min_timestamp_ms, start_ms + limits.max_future_skew_ms
    for s in samples:
        key = s.key if s.key is not None else (s.name, *(s.labels or {}).items())
        h = cache.get(key, _MISSING)
        if h is _MISSING:
            pts = target_points([resolve(s)], target_labels, job.honor_labels, rules)
            if not pts:
                h = None
            else:
                p = pts[0]
                try:
                    h = series(p.name, p.labels, p.kind)
                except InvalidSample as e:
                    h = _INVALID
                    first_refusal = first_refusal or str(e)[:200]
            tl.remember(key, h)
        if h is None:
            continue
        if h is _INVALID:
            invalid += 1
            continue
        if honor_ts and s.timestamp_ms is not None:
            ts = s.timestamp_ms
            if not lo <= ts <= hi:
                invalid += 1
                first_refusal = first_refusal or f"timestamp {ts} outside [{lo}, {hi}]"
                continue
        else:
            ts = start_ms
            if seen is not None:
                seen[key] = h
        append((h, s.value, ts))
    if first_refusal:  # one line per scrape, however many were refused
        log.warning("exposed series refused", job=job.job_name, reason=first_refusal)
    return out, invalid


def _entry_bytes(key: Any, h: Any) -> int:
    """About what a cache entry holds: its key, and the validated series (its key, name,
    labels and Avro descriptor: about three times the series key) plus fixed costs."""
    n = len(key) if isinstance(key, str) else sum(len(x) if isinstance(x, str) else
                                                    len(x[0]) + len(x[1]) for x in key)  # fmt: skip
    series = getattr(h, "series", None)
    return n + (3 * len(series.key) if series is not None else 0) + 400


class Inflater:
    """A response body as it arrives, inflated here (gzip or deflate) so that the body
    limit holds while it is inflated: a gzip bomb stops at ``limit`` bytes of output,
    not at whatever one network chunk inflates to (httpx's own decoding)."""

    def __init__(self, encoding: str, limit: int) -> None:
        enc = encoding.strip().lower()
        self.limit = limit
        if enc in ("", "identity"):
            self.z: Any = None
        elif enc in ("gzip", "x-gzip"):
            self.z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self.z = zlib.decompressobj()
        else:
            raise ScrapeError("http", f"unsupported Content-Encoding {enc[:40]!r}")

    def feed(self, raw: bytes, have: int) -> bytes:
        """The next part of the body, given ``have`` bytes of it so far."""
        room = self.limit - have
        try:
            out = raw if self.z is None else self.z.decompress(raw, room + 1)
        except zlib.error as e:
            raise ScrapeError("parse", f"body does not inflate: {e}") from None
        if len(out) > room:
            raise ScrapeError("body_size", f"body size limit exceeded ({self.limit} bytes)")
        return out

    def finish(self, have: int) -> bytes:
        """What the decompressor still holds (every input byte was fed: a feed that
        stopped at its output bound raised instead)."""
        if self.z is None:
            return b""
        out = self.z.flush()
        if len(out) > self.limit - have:
            raise ScrapeError("body_size", f"body size limit exceeded ({self.limit} bytes)")
        return out


class _ByteBudget:
    """Bytes of response bodies held at once, over every target: a read waits for room
    (within its scrape's timeout) instead of holding unbounded memory. The oldest
    reader never waits (it may go over by one body), so readers holding parts of the
    budget cannot wait on each other until they all time out."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.free = total
        self.readers: dict[int, None] = {}  # in the order they started
        self._cond: asyncio.Condition | None = None

    def _c(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def enter(self, reader: int) -> None:
        self.readers[reader] = None

    def _may(self, reader: int, n: int) -> bool:
        return self.free >= n or next(iter(self.readers), None) == reader

    async def take(self, reader: int, n: int) -> None:
        if not self._may(reader, n):
            async with self._c():
                await self._c().wait_for(lambda: self._may(reader, n))
        self.free -= n

    def leave(self, reader: int, n: int) -> None:
        """Return ``n`` bytes (synchronous, so a cancelled scrape still returns them)."""
        self.readers.pop(reader, None)
        self.free += n
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._c():
            self._c().notify_all()


class _TargetLoop:
    """One target's schedule and last state."""

    def __init__(self, job: ScrapeConfig, jt: JobTargets, target: Target) -> None:
        self.job = job
        self.jt = jt
        self.target = target
        self.task: asyncio.Task[None] | None = None
        self.last: ScrapeResult | None = None
        self.cache: dict[Any, Any] = {}  # series text (or name and labels) -> handle
        self.cache_cap = 1000  # entries
        self.cache_bytes_cap = 1 << 20
        self.cache_bytes = 0
        # series of the last good scrape (exposed key -> handle): staleness is tracked on
        # them; at most ``cache_cap`` (the rest are not marked when they go)
        self.live: dict[Any, Handle] = {}
        self.last_start_ms = 0

    def stale_items(self, now: dict[Any, Handle], ts: int) -> list[tuple[Handle, float, int]]:
        """Markers at ``ts`` for the live series not in ``now``, which becomes the live
        set (cut to ``cache_cap`` entries)."""
        live = self.live
        gone = [(h, STALE_NAN, ts) for k, h in live.items() if k not in now]
        if len(now) > self.cache_cap:
            now = dict(list(now.items())[: self.cache_cap])
        self.live = now
        return gone

    def remember(self, key: Any, h: Any) -> None:
        """Cache a series' handle within the target's share (entries and bytes): a full
        cache is emptied; a key over ``MAX_CACHED_KEY`` characters is not cached."""
        if isinstance(key, str) and len(key) > MAX_CACHED_KEY:
            return
        size = _entry_bytes(key, h)
        if len(self.cache) >= self.cache_cap or self.cache_bytes + size > self.cache_bytes_cap:
            self.cache.clear()
            self.cache_bytes = 0
        self.cache[key] = h
        self.cache_bytes += size


class Scraper:
    """Every job of a scrape file, its targets, their loops, and the counts."""

    def __init__(
        self,
        scrape_file: ScrapeFile,
        outlet: Outlet,
        settings: ScrapeSettings,
        registry: CollectorRegistry,
        base: Path = Path("."),
        transport: httpx.AsyncBaseTransport | None = None,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.file = scrape_file
        self.outlet = outlet
        self.settings = settings
        self.transport = transport
        self.jobs = [
            JobTargets(j, base, settings.max_sd_file_bytes, settings.max_targets)
            for j in scrape_file.jobs()
        ]
        self.loops: dict[tuple[str, str], _TargetLoop] = {}
        self.executor = concurrent.futures.ThreadPoolExecutor(1, "scrape-push")
        self.client: httpx.AsyncClient | None = None
        self.scrapes = Counter(
            "monitoring_scrape_scrapes",
            "Scrapes by job and result (ok, or the reason it failed).",
            ["job", "result"],
            registry=registry,
        )
        self.missed = Counter(
            "monitoring_scrape_missed_intervals",
            "Scrape intervals skipped because the previous scrape (or its push into a "
            "full buffer) overran them.",
            ["job"],
            registry=registry,
        )
        self.targets_gauge = Gauge(
            "monitoring_scrape_targets", "Targets being scraped.", ["job"], registry=registry
        )
        self.stale = Counter(
            "monitoring_scrape_stale_markers",
            "Staleness markers written: series gone from a page, every series of a failed "
            "scrape's target or of a target gone from service discovery.",
            ["job"],
            registry=registry,
        )
        self.over_limit = Counter(
            "monitoring_scrape_targets_over_limit",
            "Targets not scraped because scrape.max_targets were already.",
            registry=registry,
        )
        self.missed_total = 0
        self.budget = _ByteBudget(settings.max_inflight_bytes)
        self.limits = limits

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Scrape until ``stop`` is set; re-read file_sd every refresh_interval."""
        refresh = min(
            (sd.refresh_interval for j in self.file.jobs() for sd in j.file_sd_configs),
            default=None,
        )
        async with self._client() as client:
            self.client = client
            try:
                self.sync()
                while not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), refresh)
                    if not stop.is_set():
                        self.sync()
            finally:
                await self._stop_all()
                self.executor.shutdown(wait=True)

    def _client(self) -> httpx.AsyncClient:
        n = min(self.settings.max_targets, 1024)
        return httpx.AsyncClient(
            transport=self.transport,
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            headers={"User-Agent": USER_AGENT, "Accept": ACCEPT},
            follow_redirects=True,
            max_redirects=5,
            trust_env=False,
        )

    def sync(self) -> None:
        """Bring the running loops in line with the current targets."""
        wanted: dict[tuple[str, str], tuple[ScrapeConfig, JobTargets, Target]] = {}
        over = 0
        for jt in self.jobs:
            n = 0
            targets = jt.targets()
            over += jt.over
            for t in targets:
                if len(wanted) >= self.settings.max_targets:
                    over += 1
                    continue
                wanted[(jt.job.job_name, t.key)] = (jt.job, jt, t)
                n += 1
            self.targets_gauge.labels(jt.job.job_name).set(n)
        if over:
            self.over_limit.inc(over)
            log.warning("targets over scrape.max_targets not scraped", targets=over)
        for key in set(self.loops) - set(wanted):
            tl = self.loops.pop(key)
            if tl.task is not None:
                tl.task.cancel()
            self._target_lost(tl)
        for key, (job, jt, t) in wanted.items():
            if key not in self.loops:
                tl = _TargetLoop(job, jt, t)
                tl.task = asyncio.get_running_loop().create_task(self._loop(tl))
                self.loops[key] = tl
        share = max(1, len(self.loops))
        cap = max(1000, self.settings.max_cached_series // share)
        bytes_cap = max(1 << 20, self.settings.max_cache_bytes // share)
        for tl in self.loops.values():
            tl.cache_cap = cap
            tl.cache_bytes_cap = bytes_cap

    async def _stop_all(self) -> None:
        tasks = [tl.task for tl in self.loops.values() if tl.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _target_lost(self, tl: _TargetLoop) -> None:
        """A target gone from service discovery: staleness markers for its series and
        its report series, as Prometheus' end-of-run staleness (after any push of its
        last scrape: the push thread runs in order)."""
        self.executor.submit(self._mark_lost, tl)

    def _mark_lost(self, tl: _TargetLoop) -> None:
        """On the push thread: markers at now (after the target's last scrape)."""
        if not tl.last_start_ms:
            return  # never scraped: nothing was written
        ts = max(time.time_ns() // 1_000_000, tl.last_start_ms + 1)
        items = tl.stale_items({}, ts)
        report = [
            p._replace(value=STALE_NAN) for p in report_points(tl.target.label_dict, False, 0, 0, 0)
        ]
        self.stale.labels(tl.job.job_name).inc(len(items) + len(report))
        if items:
            self.outlet.push_series(items)
        self.outlet.push(report, ts)

    # -- one target --------------------------------------------------------------------------

    async def _loop(self, tl: _TargetLoop) -> None:
        interval = tl.job.interval_s
        # the target's own phase within the interval, counted from a wall-clock boundary
        phase = (tl.target.offset_s(interval) - time.time() % interval) % interval
        ticker = Ticker(interval, offset_s=phase)
        while True:
            await asyncio.sleep(ticker.remaining())
            try:
                await self.scrape(tl)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a bug must not end the loop silently
                log.error("scrape loop error", job=tl.job.job_name, error=repr(e))
            before = ticker.missed
            ticker.advance()
            if ticker.missed > before:
                self.missed.labels(tl.job.job_name).inc(ticker.missed - before)
                self.missed_total += ticker.missed - before

    async def scrape(self, tl: _TargetLoop) -> ScrapeResult:
        """Scrape one target once and push the result (waiting while the buffer is full)."""
        job, target = tl.job, tl.target
        start_ms = time.time_ns() // 1_000_000
        t0 = time.perf_counter()
        body = ctype = ""
        error = ""
        reason = "ok"
        held = [0]  # body bytes taken from the budget, given back once processed
        self.budget.enter(id(held))
        try:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a
                # cancellation that arrives as the fetch completes (cpython #86296), and the
                # stopped scraper's target loop then scraped on for ever
                async with asyncio.timeout(job.timeout_s):
                    body, ctype = await self._fetch(job, target, held)
            except TimeoutError:
                error, reason = f"context deadline exceeded ({job.timeout_s:g}s)", "timeout"
            except ScrapeError as e:
                error, reason = str(e), e.reason
            except httpx.HTTPError as e:
                error, reason = f"{type(e).__name__}: {e}"[:500], "http"
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(
                self.executor, self._finish, tl, body, ctype, error, reason, start_ms, t0
            )
        finally:
            self.budget.leave(id(held), held[0])
        tl.last = result
        return result

    async def _fetch(self, job: ScrapeConfig, target: Target, held: list[int]) -> tuple[str, str]:
        assert self.client is not None
        limit = job.body_size_limit or self.settings.max_body_bytes
        limit = min(limit, self.settings.max_body_bytes, self.settings.max_inflight_bytes)
        headers = {
            "X-Prometheus-Scrape-Timeout-Seconds": f"{job.timeout_s:g}",
            "Accept-Encoding": "gzip",  # what Prometheus asks for; inflated here, bounded
        }
        try:
            auth = job.auth_header()
        except (OSError, ValueError) as e:
            raise ScrapeError("auth", f"credentials not read: {e}") from None
        if auth is not None:
            headers["Authorization"] = auth
        async with self.client.stream("GET", target.url, headers=headers) as resp:
            if resp.status_code != 200:
                raise ScrapeError("http_status", f"server returned HTTP status {resp.status_code}")
            inflate = Inflater(resp.headers.get("content-encoding", ""), limit)
            buf = bytearray()
            async for raw in resp.aiter_raw(_CHUNK):
                chunk = inflate.feed(raw, len(buf))
                await self.budget.take(id(held), len(chunk))
                held[0] += len(chunk)
                buf += chunk
            buf += inflate.finish(len(buf))
            ctype = resp.headers.get("content-type", "")
        try:
            return buf.decode("utf-8"), ctype
        except UnicodeDecodeError as e:
            raise ScrapeError("parse", f"body is not UTF-8: {e}") from None

    def _finish(
        self,
        tl: _TargetLoop,
        body: str,
        ctype: str,
        error: str,
        reason: str,
        start_ms: int,
        t0: float,
    ) -> ScrapeResult:
        """On the push thread: parse, label, push samples and the report series."""
        job = tl.job
        items: list[tuple[Handle, float, int]] = []
        seen: dict[Any, Handle] = {}
        scraped = post = 0
        if not error:
            try:
                samples = parse_lazy(body, ctype)
                items, refused = prepare(
                    samples, tl, self.outlet.recorder.series, start_ms, self.limits, seen
                )
            except ValueError as e:  # the body, or a series in it first seen, is malformed
                error, reason, items = str(e)[:500], "parse", []
            else:
                scraped = len(samples)
                post = len(items) + refused
                if job.sample_limit and post > job.sample_limit:
                    error, reason = (
                        f"sample limit exceeded: {post} samples, limit {job.sample_limit}",
                        "sample_limit",
                    )
                else:
                    self.outlet.invalid(refused)
        up = not error
        if not up:
            items, seen = [], {}
            log.info("scrape failed", job=job.job_name, url=tl.target.url, error=error)
        # series of the last good scrape not in this one (all of them when it failed)
        stale = tl.stale_items(seen, start_ms)
        if stale:
            self.stale.labels(job.job_name).inc(len(stale))
            items += stale
        tl.last_start_ms = start_ms
        duration = time.perf_counter() - t0
        report = report_points(tl.target.label_dict, up, duration, scraped, post)
        self.scrapes.labels(job.job_name, reason).inc()
        if items:
            self.outlet.push_series(items)
        self.outlet.push(report, start_ms)
        return ScrapeResult(len(items), up, error, scraped, post, duration)


def base_dir(config_path: str | Path) -> Path:
    """file_sd paths are relative to the scrape config's folder, as in Prometheus."""
    return Path(config_path).resolve().parent


def describe(scraper: Scraper) -> dict[str, Any]:
    """A health summary: targets per job and how many were up at their last scrape."""
    jobs: dict[str, dict[str, int]] = {}
    for (job, _), tl in list(scraper.loops.items()):
        j = jobs.setdefault(job, {"targets": 0, "up": 0})
        j["targets"] += 1
        j["up"] += 1 if tl.last is not None and tl.last.up else 0
    return {"status": "ok", "jobs": jobs}
