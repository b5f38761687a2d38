"""Scraping real targets through the real broker: Debian's prometheus-node-exporter (a
process this test starts and stops) and the project's own /metrics (an ApiServer in
process). The samples come back from the samples topic as MetricBatch records, exactly
what the targets' pages said for gauges that do not move, every scrape complete."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import time
from collections import Counter as Count
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fixtures.ingest import consume_samples
from prometheus_client import CollectorRegistry, Counter

from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.ingest.outlet import Outlet
from monitoring.ingest.scrape import Scraper
from monitoring.ingest.scrape_config import ScrapeFile
from monitoring.metrics.samples import BATCH, Sample
from monitoring.runtime.topics import SAMPLES, topic_name
from monitoring.sdk.producer import MetricsCollector

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def page_value(page: str, series: str) -> float:
    m = re.search(rf"^{re.escape(series)} (\S+)$", page, re.M)
    assert m, f"{series} not on the page"
    return float(m.group(1))


def meminfo_bytes(field: str) -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == field:
                return int(rest.split()[0]) * 1024
    raise KeyError(field)


@pytest.fixture
def node_exporter(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus-node-exporter") or "/usr/bin/prometheus-node-exporter"
    assert Path(binary).exists(), "run `make node-exporter`"
    port = free_port()
    log = (tmp_path / "node_exporter.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, (tmp_path / "node_exporter.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "node_exporter did not answer"
            time.sleep(0.05)  # polling a condition
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def test_scrape_node_exporter_and_our_own_metrics_end_to_end(
    settings_factory: Callable[..., Settings], node_exporter: str
) -> None:
    settings = settings_factory()
    topic = topic_name(settings.kafka, SAMPLES)
    own = CollectorRegistry()
    Counter("demo_requests", "Requests.", ["route"], registry=own).labels("/cart").inc(7)
    api = ApiServer(own, "127.0.0.1", 0).start()
    api_target = "{}:{}".format(*api.address)
    scrape_file = ScrapeFile.parse(
        {
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
            "scrape_configs": [
                {"job_name": "node", "static_configs": [{"targets": [node_exporter]}]},
                {
                    "job_name": "self",
                    "static_configs": [{"targets": [api_target], "labels": {"env": "test"}}],
                },
            ],
        }
    )
    registry = CollectorRegistry()
    mc = MetricsCollector(settings, source="scrape-test", registry=registry, batch_size=1000)
    scraper = Scraper(scrape_file, Outlet(mc, registry, "scrape"), settings.scrape, registry)

    async def scrape_twice_each() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(scraper.run(stop))
        deadline = time.monotonic() + 60
        while not (
            len(scraper.loops) == 2
            and all(
                (
                    registry.get_sample_value(
                        "monitoring_scrape_scrapes_total", {"job": j, "result": "ok"}
                    )
                    or 0
                )
                >= 2
                for j in ("node", "self")
            )
        ):
            assert time.monotonic() < deadline, "targets not scraped twice"
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 30)

    try:
        asyncio.run(scrape_twice_each())
        page = httpx.get(f"http://{node_exporter}/metrics").text
    finally:
        api.stop()
    assert mc.close(30) == 0
    sent = registry.get_sample_value(
        "monitoring_ingest_samples_total", {"source": "scrape", "outcome": "sent"}
    )
    assert sent and sent > 1000
    assert not registry.get_sample_value(
        "monitoring_ingest_samples_total", {"source": "scrape", "outcome": "invalid"}
    )

    got = consume_samples(settings.kafka.bootstrap_servers, topic, lambda s: len(s) >= sent)
    assert len(got) == sent
    assert {name for name, _ in got} == {BATCH}
    samples = [s for _, s in got]

    def of(job: str, name: str) -> list[Sample]:
        return [s for s in samples if s.labels.get("job") == job and s.name == name]

    # up and the report series, per scrape, with the target's labels
    node_ups = of("node", "up")
    assert len(node_ups) >= 2 and {s.value for s in node_ups} == {1.0}
    assert {s.labels["instance"] for s in node_ups} == {node_exporter}
    # every scrape is complete: as many samples at its timestamp as it reported
    per_scrape = Count(s.timestamp_ms for s in samples if s.labels.get("job") == "node")
    for s in of("node", "scrape_samples_post_metric_relabeling"):
        assert per_scrape[s.timestamp_ms] == s.value + 4  # the samples and the 4 report series
    assert of("node", "scrape_samples_scraped")[0].value > 300
    # gauges that do not move arrive exactly as the page said (and as /proc says)
    mem = of("node", "node_memory_MemTotal_bytes")
    assert {s.value for s in mem} == {page_value(page, "node_memory_MemTotal_bytes")}
    assert mem[0].value == meminfo_bytes("MemTotal") and mem[0].kind == "GAUGE"
    boot = of("node", "node_boot_time_seconds")
    assert {s.value for s in boot} == {page_value(page, "node_boot_time_seconds")}
    cpu = of("node", "node_cpu_seconds_total")
    assert cpu and {s.kind for s in cpu} == {"COUNTER"}
    # the project's own /metrics, with the static labels and the counter's kind
    demo = of("self", "demo_requests_total")
    assert demo and {s.value for s in demo} == {7.0} and demo[0].kind == "COUNTER"
    assert demo[0].labels == {
        "route": "/cart",
        "env": "test",
        "job": "self",
        "instance": api_target,
    }
    assert {s.value for s in of("self", "up")} == {1.0}
