"""The scraper read as an attacker would: a target answering a gzip bomb, or timestamps
the samples contract refuses. (Both failed on the scraper as of 91a2c43.)"""

from __future__ import annotations

import gzip
import tracemalloc

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from unit.test_ingest_scrape import Recorder, job, scrape_job, scraper_for


def bomb_target() -> Starlette:
    body = gzip.compress(b"# " + b"x" * (64 << 20) + b"\n", 9)  # 64 MiB in about 64 KiB

    async def bomb(_: Request) -> Response:
        return Response(body, headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"})

    return Starlette(routes=[Route("/metrics", bomb)])


async def test_a_gzip_bomb_is_cut_at_the_body_limit_while_it_is_inflated() -> None:
    # httpx inflates each network chunk whole before the scraper counts the bytes: a
    # 64 KiB chunk of a gzip bomb became 64 MiB in memory, past a 1 MiB body_size_limit
    rec = Recorder()
    s = scraper_for([job(body_size_limit="1MiB")], bomb_target(), rec)
    tracemalloc.start()
    try:
        result = await scrape_job(s)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert not result.up and "body size limit" in result.error
    assert peak < 16 << 20, f"peak {peak >> 20} MiB while reading a body limited to 1 MiB"


async def test_exposed_timestamps_outside_the_contract_are_refused_and_counted() -> None:
    # honor_timestamps (Prometheus's default) passed a page's timestamps through: 1970 or
    # next year went to Kafka, to be refused there, uncounted here
    import time

    from prometheus_client import CollectorRegistry
    from starlette.responses import PlainTextResponse

    future = time.time_ns() // 10**6 + 86_400_000
    page = f"old 1 1000\nahead 2 {future}\nfine 3\n"

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(page)

    rec, registry = Recorder(), CollectorRegistry()
    app = Starlette(routes=[Route("/metrics", metrics)])
    result = await scrape_job(scraper_for([job()], app, rec, registry))
    assert result.up
    assert [g[0] for g in rec.got if g[0] in ("old", "ahead", "fine")] == ["fine"]
    invalid = registry.get_sample_value(
        "monitoring_ingest_samples_total", {"source": "scrape", "outcome": "invalid"}
    )
    assert invalid == 2


async def test_a_page_of_labels_too_dense_for_the_parser_fails_the_scrape_at_once() -> None:
    # prometheus_client reads labels in about (line length) x (quotes) per line: a 2 MB
    # line of escaped quotes took 55 CPU-s on the thread that pushes every target's samples
    from prometheus_client import CollectorRegistry
    from starlette.responses import PlainTextResponse

    page = 'a{b="' + '\\"' * 150_000 + '"} 1\nfine 1\n'

    async def metrics(_: Request) -> Response:
        return PlainTextResponse(page)

    rec, registry = Recorder(), CollectorRegistry()
    app = Starlette(routes=[Route("/metrics", metrics)])
    result = await scrape_job(scraper_for([job()], app, rec, registry))
    assert not result.up and "labels this dense are not parsed" in result.error
    assert rec.of("fine") == [] and rec.of("up")[0][1] == 0.0
