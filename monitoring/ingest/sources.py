"""Sources for the SDK's ``MetricsCollector.collect(sources=..., interval=...)``.

A source is read once per collection and its points go through the SDK's bounded
buffer (``Outlet``: a full buffer makes the collection wait, then counts what could
not be sent). ``as_source`` turns what the seed's API passes into one:

* ``"system"``: this host through ``SystemCollector`` (node_exporter's names), with
  ``job`` and ``instance`` labels as ``monitoring collect system`` adds them;
* a URL (``http://host:port/metrics``): one scrape per collection, as
  ``monitoring scrape`` does one (``up``, ``scrape_duration_seconds``,
  ``scrape_samples_scraped``, ``scrape_samples_post_metric_relabeling``; ``job`` is
  ``scrape`` unless given through ``ScrapeSource``, ``instance`` the URL's host:port);
* a Python callable returning ``{name: value}``, or ``Point`` values, or tuples
  ``(name, value[, labels[, kind]])``;
* any object with ``read() -> list[Point]``.

A source that fails is logged and counted (``monitoring_ingest_source_errors_total``)
and the others are still read; at most ``MAX_POINTS`` points of one source per
collection are taken.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import httpx
from prometheus_client import CollectorRegistry, Counter

from monitoring.config import Settings
from monitoring.ingest.exposition import ACCEPT, parse
from monitoring.ingest.outlet import Outlet, Point
from monitoring.ingest.scrape import (
    USER_AGENT,
    Inflater,
    ScrapeError,
    report_points,
    target_points,
)
from monitoring.log import get_logger
from monitoring.wire.sample_encoding import DEFAULT_LIMITS

log = get_logger("ingest.sources")

MAX_POINTS = 100_000


class Source(Protocol):
    """Something read once per collection."""

    name: str

    def read(self) -> list[Point]: ...


class SystemSource:
    """This host's system metrics (``SystemCollector``) with ``job`` and ``instance``."""

    def __init__(self, settings: Settings) -> None:
        from monitoring.ingest.system import SystemCollector

        sc = settings.system_collector
        self.name = "system"
        self.labels = {"job": sc.job, "instance": sc.instance or socket.gethostname()}
        self.collector = SystemCollector(sc)

    def read(self) -> list[Point]:
        return [p._replace(labels={**p.labels, **self.labels}) for p in self.collector.collect()]

    def close(self) -> None:
        self.collector.close()


class ScrapeSource:
    """One Prometheus target, scraped once per read (synchronously)."""

    def __init__(
        self,
        url: str,
        job: str = "scrape",
        labels: Mapping[str, str] | None = None,
        timeout_s: float = 10.0,
        max_body_bytes: int = 64 * 1024 * 1024,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        u = httpx.URL(url)
        if u.scheme not in ("http", "https") or not u.host:
            raise ValueError(f"not an http(s) URL: {url[:200]!r}")
        port = u.port or (443 if u.scheme == "https" else 80)
        self.url = str(u)
        self.name = f"scrape:{self.url}"
        self.labels = {"instance": f"{u.host}:{port}", **(labels or {}), "job": job}
        self.max_body_bytes = max_body_bytes
        self.client = httpx.Client(
            transport=transport,
            timeout=timeout_s,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": ACCEPT,
                "X-Prometheus-Scrape-Timeout-Seconds": f"{timeout_s:g}",
                "Accept-Encoding": "gzip",
            },
            follow_redirects=True,
            max_redirects=5,
            trust_env=False,
        )

    def read(self) -> list[Point]:
        t0 = time.perf_counter()
        points: list[Point] = []
        scraped = 0
        try:
            with self.client.stream("GET", self.url) as resp:
                if resp.status_code != 200:
                    raise ValueError(f"server returned HTTP status {resp.status_code}")
                inflate = Inflater(resp.headers.get("content-encoding", ""), self.max_body_bytes)
                body = bytearray()
                for raw in resp.iter_raw(64 * 1024):  # inflated here, within the limit
                    body += inflate.feed(raw, len(body))
                body += inflate.finish(len(body))
                ctype = resp.headers.get("content-type", "")
            samples = parse(body.decode("utf-8"), ctype)
            scraped = len(samples)
            points = target_points(samples, self.labels, False, [])
            up = True
        except (httpx.HTTPError, ValueError, ScrapeError) as e:
            log.info("scrape failed", url=self.url, error=str(e)[:300])
            up = False
        report = report_points(self.labels, up, time.perf_counter() - t0, scraped, len(points))
        return points + report

    def close(self) -> None:
        self.client.close()


class CallableSource:
    """A Python callable's values: ``{name: value}``, points, or tuples."""

    def __init__(self, fn: Callable[[], Any], name: str = "") -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")

    def read(self) -> list[Point]:
        got = self.fn()
        if isinstance(got, Mapping):
            return [Point(str(k), {}, "GAUGE", float(v)) for k, v in got.items()]
        if not isinstance(got, Iterable):
            raise TypeError(f"{self.name} returned {type(got).__name__}, not a mapping or list")
        out: list[Point] = []
        for item in got:
            if isinstance(item, Point):
                out.append(item)
            elif isinstance(item, tuple) and 2 <= len(item) <= 4:
                name, value, *rest = item
                labels = dict(rest[0]) if rest and rest[0] else {}
                kind = str(rest[1]) if len(rest) > 1 else "GAUGE"
                out.append(Point(str(name), labels, kind, float(value)))
            else:
                raise TypeError(f"{self.name}: {item!r:.100} is not a point")
        return out


def as_source(obj: Any, settings: Settings) -> Any:
    """What ``collect(sources=...)`` was given, as a source."""
    if isinstance(obj, str):
        if obj == "system":
            return SystemSource(settings)
        if obj.startswith(("http://", "https://")):
            return ScrapeSource(obj)
        raise ValueError(f"unknown source {obj[:100]!r}: 'system', a URL, or a callable")
    if hasattr(obj, "read") and callable(obj.read):
        return obj
    if callable(obj):
        return CallableSource(obj)
    raise TypeError(f"{type(obj).__name__} is not a source: 'system', a URL, or a callable")


class SourceSet:
    """Sources read together at one timestamp, through one outlet; failures counted in
    ``errors`` (a Counter labelled by source)."""

    def __init__(
        self, sources: Iterable[Any], outlet: Outlet, errors: Counter, settings: Settings
    ) -> None:
        self.sources = [as_source(s, settings) for s in sources]
        self.outlet = outlet
        self.errors = errors
        self.limits = DEFAULT_LIMITS

    def collect(self, timestamp_ms: int) -> int:
        """Read every source once; the number of samples buffered."""
        n = 0
        for src in self.sources:
            try:
                points = src.read()
            except Exception as e:  # one source's failure does not stop the others
                self.errors.labels(src.name[:200]).inc()
                log.warning("source failed", source=src.name[:200], error=repr(e)[:300])
                continue
            lo = self.limits.min_timestamp_ms
            hi = timestamp_ms + self.limits.max_future_skew_ms
            if any(p.timestamp_ms is not None and not lo <= p.timestamp_ms <= hi for p in points):
                kept = [p for p in points if p.timestamp_ms is None or lo <= p.timestamp_ms <= hi]
                self.outlet.invalid(len(points) - len(kept))
                log.warning("timestamps outside the samples contract", source=src.name[:200])
                points = kept
            if len(points) > MAX_POINTS:
                log.warning("source over its bound", source=src.name[:200], points=len(points))
                self.outlet.samples.labels(self.outlet.source, "unsent").inc(
                    len(points) - MAX_POINTS
                )
                points = points[:MAX_POINTS]
            n += self.outlet.push(points, timestamp_ms).sent
        return n

    def close(self) -> None:
        for src in self.sources:
            close = getattr(src, "close", None)
            if close is not None:
                close()


def source_errors(registry: CollectorRegistry) -> Counter:
    """The counter of failed source reads, on ``registry``."""
    return Counter(
        "monitoring_ingest_source_errors",
        "Source reads that raised, by source.",
        ["source"],
        registry=registry,
    )
