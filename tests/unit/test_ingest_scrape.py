"""Scraping in-process: exposition parsing, sample labels, and whole scrapes of a fake
target (a Starlette app behind httpx's ASGI transport): up and the report series,
timestamps, failures (status, timeout, body size, parse, sample_limit), file_sd target
loss, the schedule and backpressure."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from monitoring.config import ConfigError, ScrapeSettings
from monitoring.ingest.exposition import _library, _library_series, parse, series_of
from monitoring.ingest.outlet import Outlet
from monitoring.ingest.scrape import Scraper, _TargetLoop, target_points
from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.ingest.ticker import Ticker
from monitoring.metrics.samples import is_stale
from monitoring.sdk.producer import SeriesHandle, make_series
from monitoring.sdk.sender import BufferFullError

PAGE = """# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",job="app"} 1027
http_requests_total{code="500"} 3 1700000000123
# TYPE temp gauge
temp 21.5
# TYPE rpc histogram
rpc_bucket{le="0.1"} 5
rpc_bucket{le="+Inf"} 7
rpc_sum 1.5
rpc_count 7
# TYPE lat summary
lat{quantile="0.5"} 0.2
lat_sum 3
lat_count 9
plain 1
"""

OPENMETRICS = """# TYPE jobs counter
jobs_total 4 1700000000.250
jobs_created 1700000000 1700000000.250
# TYPE st stateset
st{st="a"} 1
# EOF
"""


def test_text_format_kinds_values_and_timestamps() -> None:
    got = [(s.name, s.labels, s.value, s.timestamp_ms, s.kind) for s in parse(PAGE, "")]
    assert got == [
        ("http_requests_total", {"code": "200", "job": "app"}, 1027.0, None, "COUNTER"),
        ("http_requests_total", {"code": "500"}, 3.0, 1700000000123, "COUNTER"),
        ("temp", {}, 21.5, None, "GAUGE"),
        ("rpc_bucket", {"le": "0.1"}, 5.0, None, "HISTOGRAM_BUCKET"),
        ("rpc_bucket", {"le": "+Inf"}, 7.0, None, "HISTOGRAM_BUCKET"),
        ("rpc_sum", {}, 1.5, None, "COUNTER"),
        ("rpc_count", {}, 7.0, None, "COUNTER"),
        ("lat", {"quantile": "0.5"}, 0.2, None, "SUMMARY"),
        ("lat_sum", {}, 3.0, None, "COUNTER"),
        ("lat_count", {}, 9.0, None, "COUNTER"),
        ("plain", {}, 1.0, None, "UNTYPED"),
    ]


def test_openmetrics_by_content_type() -> None:
    ctype = "application/openmetrics-text; version=1.0.0; charset=utf-8"
    got = [(s.name, s.value, s.timestamp_ms, s.kind) for s in parse(OPENMETRICS, ctype)]
    assert got == [
        ("jobs_total", 4.0, 1700000000250, "COUNTER"),
        ("jobs_created", 1700000000.0, 1700000000250, "GAUGE"),
        ("st", 1.0, None, "GAUGE"),
    ]
    with pytest.raises(ValueError, match="OpenMetrics"):
        parse("jobs_total 4\n", ctype)  # no # EOF


@pytest.mark.parametrize("body", ['a{b="c} 1\n', 'a{1b="c"} 1\n', "1a 1\n", "a 1 x\n"])
def test_malformed_text_raises(body: str) -> None:
    with pytest.raises(ValueError):
        parse(body, "text/plain; version=0.0.4")


def test_honor_labels_and_metric_relabeling() -> None:
    samples = parse(PAGE, "")[:2]
    target = {"job": "node", "instance": "h:1"}
    off = target_points(samples, target, False, [])
    assert off[0].labels == {
        "code": "200",
        "exported_job": "app",
        "job": "node",
        "instance": "h:1",
    }
    on = target_points(samples, target, True, [])
    assert on[0].labels == {"code": "200", "job": "app", "instance": "h:1"}
    assert on[1].labels == {"code": "500", "job": "node", "instance": "h:1"}
    from monitoring.ingest.relabel import compile_rules
    from monitoring.ingest.scrape_config import RelabelConfig

    rules = compile_rules(
        [
            RelabelConfig(source_labels=["code"], regex="5..", action="drop"),
            RelabelConfig(
                source_labels=["__name__"],
                regex="http_(.*)",
                target_label="__name__",
                replacement="web_$1",
            ),
        ]
    )
    (kept,) = target_points(samples, target, False, rules)
    assert kept.name == "web_requests_total" and "__name__" not in kept.labels


# -- whole scrapes against a fake target ---------------------------------------------------


class Recorder:
    """MetricsCollector's record(); raises BufferFullError while ``full`` is set."""

    def __init__(self) -> None:
        self.got: list[tuple[str, float, dict[str, str], int | None, str]] = []
        self.full = False

    def record(
        self,
        name: str,
        value: float,
        labels: Mapping[str, str] | None = None,
        timestamp_ms: int | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> bool:
        if self.full:
            time.sleep(0.01)  # as the SDK would block (for its block timeout) first
            raise BufferFullError("full")
        self.got.append((name, value, dict(labels or {}), timestamp_ms, kind))
        return True

    def of(self, name: str) -> list[tuple[str, float, dict[str, str], int | None, str]]:
        return [g for g in self.got if g[0] == name]

    def series(
        self,
        name: str,
        labels: Mapping[str, Any] | None = None,
        kind: str = "GAUGE",
        unit: str = "",
    ) -> Any:
        """The SDK's own SeriesHandle (validation, finite values) over ``record``."""
        ref = make_series(name, labels, kind, unit)

        def append(sr: Any, ts: int, v: float) -> bool:
            return self.record(sr.name, v, sr.labels, ts, sr.kind)

        return SeriesHandle(ref, append)


def fake_target(release: asyncio.Event | None = None) -> Starlette:
    async def metrics(_: Request) -> Response:
        return PlainTextResponse(PAGE, headers={"content-type": "text/plain; version=0.0.4"})

    async def om(_: Request) -> Response:
        return Response(OPENMETRICS, media_type="application/openmetrics-text; version=1.0.0")

    async def gz(_: Request) -> Response:
        body = gzip.compress(("big_gauge 1\n" * 50_000).encode())
        return Response(body, headers={"content-encoding": "gzip", "content-type": "text/plain"})

    async def error(_: Request) -> Response:
        return PlainTextResponse("no", status_code=503)

    async def slow(_: Request) -> Response:
        assert release is not None
        await release.wait()
        return PlainTextResponse("late 1\n")

    async def broken(_: Request) -> Response:
        return PlainTextResponse('a{b="c} 1\n')

    async def echo(request: Request) -> Response:
        q = dict(request.query_params)
        headers = request.headers
        lines = [f'q{{k="{k}",v="{v}"}} 1' for k, v in sorted(q.items())]
        lines.append(f"timeout_header {headers.get('x-prometheus-scrape-timeout-seconds')}")
        accept_om = 1 if "openmetrics" in headers.get("accept", "") else 0
        lines.append(f"accept_openmetrics {accept_om}")
        return PlainTextResponse("\n".join(lines) + "\n")

    return Starlette(
        routes=[
            Route("/metrics", metrics),
            Route("/om", om),
            Route("/gz", gz),
            Route("/error", error),
            Route("/slow", slow),
            Route("/broken", broken),
            Route("/echo", echo),
        ]
    )


def scraper_for(
    jobs: list[dict[str, Any]],
    app: Starlette,
    rec: Recorder,
    registry: CollectorRegistry | None = None,
    base: Path = Path("."),
    give_up_s: float = 5.0,
    **settings: Any,
) -> Scraper:
    registry = registry or CollectorRegistry()
    outlet = Outlet(rec, registry, "scrape", give_up_s=give_up_s)
    return Scraper(
        ScrapeFile.parse({"scrape_configs": jobs}),
        outlet,
        ScrapeSettings(**settings),
        registry,
        base=base,
        transport=httpx.ASGITransport(app=app),
    )


async def scrape_job(scraper: Scraper, index: int = 0) -> Any:
    jt = scraper.jobs[index]
    (target,) = jt.targets()
    async with scraper._client() as client:
        scraper.client = client
        return await scraper.scrape(_TargetLoop(jt.job, jt, target))


def job(path: str = "/metrics", **kw: Any) -> dict[str, Any]:
    return {
        "job_name": "app",
        "metrics_path": path,
        "scrape_timeout": "1s",
        "static_configs": [{"targets": ["fake:8080"], "labels": {"env": "test"}}],
        **kw,
    }


async def test_a_scrape_writes_samples_and_the_report_series() -> None:
    rec = Recorder()
    registry = CollectorRegistry()
    s = scraper_for([job()], fake_target(), rec, registry)
    before = time.time_ns() // 10**6
    result = await scrape_job(s)
    after = time.time_ns() // 10**6
    assert result.up and result.scraped == 11 and result.post_relabel == 11
    target = {"env": "test", "instance": "fake:8080", "job": "app"}
    (up,) = rec.of("up")
    assert up[1:3] == (1.0, target)
    start = up[3]
    assert start is not None and before <= start <= after
    # every sample without its own timestamp gets the scrape's start, as in Prometheus
    stamps = {g[3] for g in rec.got if g[0] != "http_requests_total"}
    assert stamps == {start}
    assert {g[3] for g in rec.of("http_requests_total")} == {start, 1700000000123}
    assert rec.of("scrape_samples_scraped")[0][1] == 11
    assert rec.of("scrape_samples_post_metric_relabeling")[0][1] == 11
    assert 0 < rec.of("scrape_duration_seconds")[0][1] < 1
    assert rec.of("temp")[0][2] == target
    assert rec.of("rpc_bucket")[0][4] == "HISTOGRAM_BUCKET"
    (exported,) = [g for g in rec.of("http_requests_total") if g[2].get("code") == "200"]
    assert exported[2]["exported_job"] == "app" and exported[2]["job"] == "app"
    assert (
        registry.get_sample_value("monitoring_scrape_scrapes_total", {"job": "app", "result": "ok"})
        == 1
    )


async def test_honor_timestamps_false_uses_the_scrape_time() -> None:
    rec = Recorder()
    await scrape_job(scraper_for([job(honor_timestamps=False)], fake_target(), rec))
    assert len({g[3] for g in rec.got}) == 1


async def test_openmetrics_and_params_and_headers() -> None:
    rec = Recorder()
    await scrape_job(scraper_for([job("/om")], fake_target(), rec))
    assert rec.of("jobs_total")[0][3] == 1700000000250
    rec = Recorder()
    await scrape_job(scraper_for([job("/echo", params={"module": ["icmp"]})], fake_target(), rec))
    assert [g[2]["v"] for g in rec.of("q")] == ["icmp"]
    assert rec.of("timeout_header")[0][1] == 1.0
    assert rec.of("accept_openmetrics")[0][1] == 1.0


@pytest.mark.parametrize(
    ("path", "extra", "reason", "scraped"),
    [
        ("/error", {}, "http_status", 0),
        ("/broken", {}, "parse", 0),
        ("/metrics", {"sample_limit": 10}, "sample_limit", 11),
        ("/gz", {"body_size_limit": "64KB"}, "body_size", 0),
    ],
)
async def test_failed_scrapes_write_up_0_and_no_samples(
    path: str, extra: dict[str, Any], reason: str, scraped: int
) -> None:
    rec = Recorder()
    registry = CollectorRegistry()
    result = await scrape_job(scraper_for([job(path, **extra)], fake_target(), rec, registry))
    assert not result.up and result.error
    names = sorted({g[0] for g in rec.got})
    assert names == [
        "scrape_duration_seconds",
        "scrape_samples_post_metric_relabeling",
        "scrape_samples_scraped",
        "up",
    ]
    assert rec.of("up")[0][1] == 0.0
    assert rec.of("scrape_samples_scraped")[0][1] == scraped
    assert (
        registry.get_sample_value(
            "monitoring_scrape_scrapes_total", {"job": "app", "result": reason}
        )
        == 1
    )


async def test_staleness_markers_for_series_gone_and_for_a_failed_scrape() -> None:
    """Prometheus' rules: a series the previous scrape had and this one has not is
    marked stale at this scrape's time; a failed scrape marks every series of the last
    good one (and writes up=0, a value); a series with its own timestamp is not tracked;
    a marker is written once."""
    page = ['a 1\nb{x="1"} 2\nb{x="2"} 3\nc 4 1700000000123\n']
    status = [200]

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(page[0], status_code=status[0])

    rec = Recorder()
    registry = CollectorRegistry()
    s = scraper_for([job()], Starlette(routes=[Route("/metrics", metrics)]), rec, registry)
    jt = s.jobs[0]
    (target,) = jt.targets()
    tl = _TargetLoop(jt.job, jt, target)

    def stale(since: int) -> set[tuple[str, str, int | None]]:
        return {(g[0], g[2].get("x", ""), g[3]) for g in rec.got[since:] if is_stale(g[1])}

    async with s._client() as client:
        s.client = client
        await s.scrape(tl)
        assert not stale(0)
        page[0] = 'a 1\nb{x="1"} 2\n'  # b{x="2"} and c are gone
        n = len(rec.got)
        await s.scrape(tl)
        t2 = rec.of("up")[-1][3]
        assert stale(n) == {("b", "2", t2)}  # c has a timestamp of its own: not tracked
        status[0] = 503  # the target fails: every series of the last good scrape
        n = len(rec.got)
        await s.scrape(tl)
        t3 = rec.of("up")[-1][3]
        assert stale(n) == {("a", "", t3), ("b", "1", t3)}
        assert rec.of("up")[-1][1] == 0.0
        n = len(rec.got)
        await s.scrape(tl)  # still failing: nothing left to mark
        assert not stale(n)
        status[0] = 200
        n = len(rec.got)
        await s.scrape(tl)  # back: its series are new again, and a value each
        assert not stale(n) and {g[0] for g in rec.got[n:]} >= {"a", "b"}
    marker = next(g for g in rec.got if is_stale(g[1]))[1]
    assert marker != marker  # a NaN, and with Prometheus' bits (is_stale is bitwise)
    assert registry.get_sample_value("monitoring_scrape_stale_markers_total", {"job": "app"}) == 3


async def test_gzip_body_is_limited_after_decoding_and_read_within_the_limit() -> None:
    rec = Recorder()
    result = await scrape_job(scraper_for([job("/gz")], fake_target(), rec))
    assert result.up and result.scraped == 50_000  # 600 KB decoded, the default cap is 64 MiB
    rec = Recorder()
    result = await scrape_job(scraper_for([job("/gz")], fake_target(), rec, max_body_bytes=100_000))
    assert not result.up and "body size limit" in result.error  # the scraper's own cap


async def test_a_scrape_longer_than_its_timeout_fails() -> None:
    release = asyncio.Event()
    rec = Recorder()
    t0 = time.monotonic()
    result = await scrape_job(
        scraper_for([job("/slow", scrape_timeout="200ms")], fake_target(release), rec)
    )
    release.set()
    assert not result.up and "deadline" in result.error
    assert time.monotonic() - t0 < 5


async def test_a_stop_that_arrives_as_a_fetch_completes_ends_the_target_loop() -> None:
    """The stop (a cancellation) lands in the same step as the fetch's result: Python
    3.11's asyncio.wait_for returned the result and dropped the cancellation, so the
    stopped scraper's loop scraped on for ever (seen in the e2e bench: one target still
    scraped minutes after stop, ``run`` never returned)."""
    rec = Recorder()
    s = scraper_for([job(scrape_interval="200ms", scrape_timeout="100ms")], fake_target(), rec)
    jt = s.jobs[0]
    (target,) = jt.targets()
    tl = _TargetLoop(jt.job, jt, target)
    fetches = [0]

    async def fetch_then_stop(*_: Any) -> tuple[str, str]:
        fetches[0] += 1
        assert loop_task is not None
        loop_task.cancel()  # the stop, in the step that completes the fetch
        return "a 1\n", "text/plain"

    s._fetch = fetch_then_stop  # type: ignore[method-assign,assignment]
    loop_task: asyncio.Task[None] | None = None
    loop_task = asyncio.create_task(s._loop(tl))
    done, _ = await asyncio.wait([loop_task], timeout=30)
    assert done and loop_task.cancelled() and fetches[0] == 1
    s.executor.shutdown(wait=True)


async def wait_for(cond: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_ticker_keeps_its_deadlines_whatever_the_work_costs() -> None:
    now = [1000.0]
    t = Ticker(15.0, offset_s=3.0, clock=lambda: now[0])
    due = []
    for work in (0.5, 14.0, 2.0, 40.0, 1.0):  # the fourth overruns two deadlines
        now[0] = t.due + 0.01  # woken just after the deadline
        due.append(t.due)
        now[0] += work
        t.advance()
    assert due == [1003.0, 1018.0, 1033.0, 1048.0, 1093.0]  # on the grid, no drift
    assert t.missed == 2


async def test_schedule_file_sd_and_target_loss(tmp_path: Path) -> None:
    sd = tmp_path / "targets.json"
    sd.write_text(json.dumps([{"targets": ["a:1", "b:1"], "labels": {"team": "x"}}]))
    rec = Recorder()
    registry = CollectorRegistry()
    jobs = [
        {
            "job_name": "sd",
            "scrape_interval": "200ms",
            "scrape_timeout": "100ms",
            "file_sd_configs": [{"files": ["*.json"], "refresh_interval": "100ms"}],
        }
    ]
    s = scraper_for(jobs, fake_target(), rec, registry, base=tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))

    def ups(instance: str) -> list[float]:
        return [g[1] for g in rec.of("up") if g[2]["instance"] == instance]

    try:
        await wait_for(lambda: len(ups("a:1")) >= 3 and len(ups("b:1")) >= 3)
        up = rec.of("up")[0]
        assert up[2]["team"] == "x" and "__meta_filepath" not in up[2]
        sd.write_text(json.dumps([{"targets": ["a:1"], "labels": {"team": "x"}}]))
        # b is gone: staleness markers for its series and its report series, as
        # Prometheus' end-of-run staleness, after its last scrape
        await wait_for(lambda: any(is_stale(v) for v in ups("b:1")))
        of_b = [g for g in rec.got if g[2].get("instance") == "b:1"]
        marks = [g for g in of_b if is_stale(g[1])]
        last_scrape = max(g[3] or 0 for g in of_b if not is_stale(g[1]))
        assert {g[3] for g in marks} == {marks[0][3]} and (marks[0][3] or 0) > last_scrape
        page_series = {(g[0], tuple(sorted(g[2].items()))) for g in of_b if g[3] == last_scrape}
        marked = {(g[0], tuple(sorted(g[2].items()))) for g in marks}
        # every series of its last scrape but the one with a timestamp of its own
        assert marked == {k for k in page_series if k[0] != "http_requests_total"} | {
            k for k in page_series if k[0] == "http_requests_total" and ("code", "200") in k[1]
        }
        assert 0.0 not in ups("b:1")  # no up=0: the target was not down, it left
        n = len(ups("b:1"))
        count_a = len(ups("a:1"))
        await wait_for(lambda: len(ups("a:1")) >= count_a + 3)
        assert len(ups("b:1")) == n  # and no more scrapes of it
        sd.write_text("not json")  # unreadable: the last good targets stay
        count_a = len(ups("a:1"))
        await wait_for(lambda: len(ups("a:1")) >= count_a + 3)
        assert s.jobs[0].file_sd is not None and s.jobs[0].file_sd.errors >= 1
        assert registry.get_sample_value("monitoring_scrape_targets", {"job": "sd"}) == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_a_full_buffer_slows_scrapes_and_counts_what_was_not_sent() -> None:
    rec = Recorder()
    registry = CollectorRegistry()
    jobs = [job(scrape_interval="100ms", scrape_timeout="100ms")]
    s = scraper_for(jobs, fake_target(), rec, registry, give_up_s=0.5)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    try:
        await wait_for(lambda: len(rec.of("up")) >= 2)
        rec.full = True
        await wait_for(lambda: (s.missed_total or 0) >= 2)  # scrapes waited on the push
        rec.full = False
        sent = len(rec.got)
        await wait_for(lambda: len(rec.got) > sent)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)

    def count(outcome: str) -> float:
        v = registry.get_sample_value(
            "monitoring_ingest_samples_total", {"source": "scrape", "outcome": outcome}
        )
        return v or 0.0

    assert count("unsent") > 0  # what could not be sent is counted, not silently lost
    assert count("sent") == len(rec.got)
    assert registry.get_sample_value("monitoring_scrape_missed_intervals_total", {"job": "app"})


async def test_series_are_validated_once_and_refused_ones_counted() -> None:
    long = "v" * 3000  # over the contract's 2048-character label value
    body = f'ok 1\nbad{{x="{long}"}} 2\nnan_value NaN\nok2{{a="b"}} 3\n'

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(body)

    app = Starlette(routes=[Route("/metrics", metrics)])
    rec = Recorder()
    made: list[str] = []
    series = rec.series

    def counting(name: str, *a: Any, **kw: Any) -> Any:
        made.append(name)
        return series(name, *a, **kw)

    rec.series = counting  # type: ignore[method-assign]
    registry = CollectorRegistry()
    s = scraper_for([job()], app, rec, registry)
    jt = s.jobs[0]
    (target,) = jt.targets()
    tl = _TargetLoop(jt.job, jt, target)
    async with s._client() as client:
        s.client = client
        first = await s.scrape(tl)
        second = await s.scrape(tl)
    assert first.up and second.up and first.scraped == 4
    assert sorted(made) == ["bad", "nan_value", "ok", "ok2"]  # once each, not per scrape
    assert [g[1] for g in rec.of("ok")] == [1.0, 1.0]
    invalid = registry.get_sample_value(
        "monitoring_ingest_samples_total", {"source": "scrape", "outcome": "invalid"}
    )
    assert invalid == 4  # the long label value and the NaN, at both scrapes
    assert not rec.of("bad") and not rec.of("nan_value")


# -- the plain split against the library, on pages of every shape --------------------------

_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
_values = st.one_of(
    st.integers(-(10**15), 10**15).map(str),
    st.floats(allow_nan=False, allow_infinity=True, width=64).map(repr),
    st.sampled_from(["+Inf", "-Inf", "1e3", "0.5", "-0"]),
)
_label_values = st.text(alphabet='ab }{#,=" \\\n', max_size=8)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@st.composite
def pages(draw: Any) -> str:
    lines = []
    for f, name in enumerate(draw(st.lists(_names, min_size=1, max_size=5, unique=True))):
        typ = draw(st.sampled_from(["counter", "gauge", "summary", "histogram", "untyped", None]))
        declared = name + ("_total" if typ == "counter" and draw(st.booleans()) else "")
        if typ is not None:
            lines.append(f"# HELP {declared} Family {f}.")
            lines.append(f"# TYPE {declared} {typ}")
        suffixes = {
            "histogram": ["_bucket", "_sum", "_count"],
            "summary": ["", "_sum", "_count"],
        }.get(typ or "", [""])
        for suffix in suffixes:
            for _ in range(draw(st.integers(1, 3))):
                labels = draw(st.dictionaries(_names, _label_values, max_size=3))
                if suffix == "_bucket":
                    labels["le"] = draw(st.sampled_from(["0.1", "1", "+Inf"]))
                body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
                series = (declared if suffix == "" else name + suffix) + (
                    f"{{{body}}}" if labels else ""
                )
                ts = draw(st.one_of(st.none(), st.integers(10**12, 2 * 10**12)))
                lines.append(f"{series} {draw(_values)}" + (f" {ts}" if ts else ""))
    return "\n".join(lines) + "\n"


def _comparable(samples: list[Any]) -> list[tuple[Any, ...]]:
    return [(s.name, s.labels, repr(s.value), s.timestamp_ms, s.kind) for s in samples]


def _read_both(text: str) -> tuple[Any, Any]:
    """``series_of`` (the fast path first) and the library alone, or the error type."""
    out: list[Any] = []
    for f in (series_of, _library_series):
        try:
            out.append(f(text))
        except ValueError:
            out.append(ValueError)
    return out[0], out[1]


def _series_text(name: str, pairs: list[tuple[str, str]] | None, comma: bool) -> str:
    if pairs is None:
        return name
    body = ",".join(f'{k}="{v}"' for k, v in pairs) + ("," if comma else "")
    return name + "{" + body + "}"


_label_names = st.one_of(
    st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,4}", fullmatch=True),
    st.sampled_from(["__name__", "__x", "le", "a"]),
)
_series_texts = st.one_of(
    # the hostile alphabet of a series' text, whatever its shape
    st.text(alphabet='ab_:_1{}=",\\ \t\r\n#é', max_size=24),
    # the common shape, with values from that alphabet (escapes taken by the library)
    st.builds(
        _series_text,
        st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,6}", fullmatch=True),
        st.one_of(
            st.none(),
            st.lists(
                st.tuples(_label_names, st.text(alphabet='ab }{#,=é"\\\n', max_size=6)),
                max_size=4,
            ),
        ),
        st.booleans(),
    ),
)


@settings(max_examples=examples(1000), deadline=None)
@given(_series_texts)
def test_series_text_fast_path_reads_what_the_library_reads(text: str) -> None:
    fast, library = _read_both(text)
    assert fast == library


def test_series_text_fast_path_examples() -> None:
    assert series_of('a{b="c",d=""}') == ("a", {"b": "c", "d": ""})
    assert series_of("a:b_c") == ("a:b_c", {})
    assert series_of('a{b="x}y",}') == ("a", {"b": "x}y"})
    assert series_of('a{b="\\n"}') == ("a", {"b": "\n"})  # escapes: the library
    for bad in ('a{b="1",b="2"}', "a{b=c}", "1a", 'a{b="c"'):
        assert _read_both(bad) == (ValueError, ValueError)
    assert _read_both('{__name__="a"}') == (("a", {}), ("a", {}))


@settings(max_examples=examples(300), deadline=None)
@given(pages())
def test_plain_split_reads_what_the_library_reads(page: str) -> None:
    try:
        expected = _comparable(_library(page, openmetrics=False))
    except ValueError:
        with pytest.raises(ValueError):
            parse(page, "")
        return
    assert _comparable(parse(page, "")) == expected


def test_counter_names_stay_as_the_page_gives_them() -> None:
    body = "# TYPE x counter\nx 3\n# TYPE y_total counter\ny_total 4\n"
    assert [(s.name, s.kind) for s in parse(body, "")] == [("x", "COUNTER"), ("y_total", "COUNTER")]
    assert [(s.name, s.kind) for s in _library(body, False)] == [
        ("x", "COUNTER"),
        ("y_total", "COUNTER"),
    ]
    tabbed = "x\t3\t1700000000000\n"  # a line outside the plain shape: the library's reading
    assert [(s.name, s.value, s.timestamp_ms) for s in parse(tabbed, "")] == [
        ("x", 3.0, 1700000000000)
    ]


def test_exported_labels_resolve_after_the_target_labels_are_set() -> None:
    (s,) = parse('m{job="a",exported_job="b"} 1\n', "")
    (p,) = target_points([s], {"job": "node", "exported_job": "t"}, False, [])
    # both clash; shortest name first: job's exposed value goes past exported_job (a
    # target label now) to exported_exported_job, then exported_job's one step further
    assert p.labels == {
        "job": "node",
        "exported_job": "t",
        "exported_exported_job": "a",
        "exported_exported_exported_job": "b",
    }


async def test_scraping_a_guarded_metrics_endpoint_with_credentials(tmp_path: Path) -> None:
    from monitoring.api.server import serve
    from monitoring.config import ApiSettings

    own = CollectorRegistry()
    Counter("guarded", "Requests.", registry=own).inc()
    api = serve(ApiSettings(token="s3cret-token"), own, "127.0.0.1", 0)
    target = "{}:{}".format(*api.address)
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\n")

    def guarded_job(**auth: Any) -> dict[str, Any]:
        return {
            "job_name": "guarded",
            "scrape_timeout": "5s",
            "static_configs": [{"targets": [target]}],
            **auth,
        }

    async def scrape(**auth: Any) -> Any:
        rec = Recorder()
        registry = CollectorRegistry()
        outlet = Outlet(rec, registry, "scrape")
        s = Scraper(
            ScrapeFile.parse({"scrape_configs": [guarded_job(**auth)]}),
            outlet,
            ScrapeSettings(),
            registry,
        )
        return await scrape_job(s), rec

    try:
        ok, rec = await scrape(authorization={"credentials": "s3cret-token"})
        assert ok.up and rec.of("guarded_total")[0][1] == 1.0
        from_file, _ = await scrape(authorization={"credentials_file": str(token_file)})
        assert from_file.up
        refused, rec = await scrape()
        assert not refused.up and "401" in refused.error and not rec.of("guarded_total")
        wrong, _ = await scrape(authorization={"credentials": "guess"})
        assert not wrong.up
        missing, _ = await scrape(authorization={"credentials_file": str(tmp_path / "none")})
        assert not missing.up and "credentials not read" in missing.error
    finally:
        api.stop()


async def test_basic_auth_header_and_secret_handling(tmp_path: Path) -> None:
    seen: list[str] = []

    async def echo_auth(request: Request) -> Response:
        seen.append(request.headers.get("authorization", ""))
        return PlainTextResponse("x 1\n")

    app = Starlette(routes=[Route("/metrics", echo_auth)])
    pw = tmp_path / "pw"
    pw.write_text("from-file\n")
    for auth, expected in [
        ({"username": "u", "password": "p"}, "Basic dTpw"),
        ({"username": "u", "password_file": str(pw)}, "Basic dTpmcm9tLWZpbGU="),
    ]:
        rec = Recorder()
        await scrape_job(scraper_for([job(basic_auth=auth)], app, rec))
        assert seen[-1] == expected
    secret = "p-secret-value"
    cfg = ScrapeFile.parse(
        {"scrape_configs": [job(basic_auth={"username": "u", "password": secret})]}
    )
    assert secret not in repr(cfg) and secret not in str(cfg.jobs()[0].basic_auth)
    refused: list[tuple[dict[str, Any], str]] = [
        ({"basic_auth": {"username": "u"}, "authorization": {"credentials": "x"}}, "both"),
        ({"basic_auth": {"username": "u", "password": "a", "password_file": "f"}}, "not both"),
        ({"authorization": {}}, "credentials or credentials_file"),
        ({"authorization": {"type": "Basic", "credentials": "x"}}, "use basic_auth"),
        ({"tls_config": {"insecure_skip_verify": True}}, "not supported here: tls_config"),
    ]
    for bad, message in refused:
        with pytest.raises(ConfigError, match=message):
            ScrapeFile.parse({"scrape_configs": [job(**bad)]})


async def test_bodies_in_flight_share_a_byte_budget_and_give_it_back() -> None:
    big = "".join(f'g{{i="{i}"}} {i}\n' for i in range(40_000))  # about 640 KB each

    async def page_(_: Request) -> Response:
        return PlainTextResponse(big)

    app = Starlette(routes=[Route("/metrics", page_)])
    rec = Recorder()
    jobs = [
        {"job_name": f"j{i}", "scrape_timeout": "60s", "static_configs": [{"targets": ["t:1"]}]}
        for i in range(3)
    ]
    s = scraper_for(jobs, app, rec, max_inflight_bytes=1024**2)
    loops = []
    for jt in s.jobs:
        (target,) = jt.targets()
        loops.append(_TargetLoop(jt.job, jt, target))
    async with s._client() as client:
        s.client = client
        results = await asyncio.gather(*(s.scrape(tl) for tl in loops))
    assert all(r.up and r.scraped == 40_000 for r in results)  # each waited its turn
    await asyncio.sleep(0)  # the wake-up task runs
    assert s.budget.free == s.budget.total


async def test_the_series_cache_is_bounded_in_bytes_and_long_keys_are_not_cached() -> None:
    long_value = "v" * 5000  # over MAX_CACHED_KEY, within nothing else: refused later
    body = "".join(f'm{{i="{i}"}} 1\n' for i in range(3000)) + f'l{{x="{long_value}"}} 1\n'

    async def page_(_: Request) -> Response:
        return PlainTextResponse(body)

    rec = Recorder()
    s = scraper_for([job()], Starlette(routes=[Route("/metrics", page_)]), rec)
    jt = s.jobs[0]
    (target,) = jt.targets()
    tl = _TargetLoop(jt.job, jt, target)
    tl.cache_bytes_cap = 200_000  # about 300 entries of these
    async with s._client() as client:
        s.client = client
        first = await s.scrape(tl)
        second = await s.scrape(tl)
    assert first.up and second.up and first.samples == second.samples == 3000
    assert tl.cache_bytes <= tl.cache_bytes_cap and len(tl.cache) < 3000
    assert not any(isinstance(k, str) and len(k) > 4096 for k in tl.cache)
    assert len(rec.of("m")) == 6000  # every sample still sent, cache or not


async def test_byte_budget_lets_the_oldest_reader_finish_first() -> None:
    from monitoring.ingest.scrape import _ByteBudget

    b = _ByteBudget(100)
    b.enter(1)
    b.enter(2)
    await b.take(1, 60)
    await b.take(2, 40)  # the budget is spent, both hold a part
    await asyncio.wait_for(b.take(1, 50), 1)  # the oldest goes on (over by 50)
    waiting = asyncio.create_task(b.take(2, 30))
    for _ in range(5):  # let it run until it blocks
        await asyncio.sleep(0)
    assert not waiting.done()  # the younger one waits for room...
    b.leave(1, 110)
    await asyncio.wait_for(waiting, 1)  # ...which the oldest gives back when done
    b.leave(2, 70)
    assert b.free == b.total == 100 and not b.readers
