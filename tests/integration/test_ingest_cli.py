"""``monitoring scrape`` and ``monitoring collect system`` as processes: each runs its
loop into the real broker and stops cleanly on SIGTERM with nothing left undelivered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.ingest import consume_samples
from prometheus_client import CollectorRegistry, Counter

from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.runtime.topics import SAMPLES, topic_name

pytestmark = pytest.mark.integration

MONITORING = [sys.executable, "-c", "from monitoring.cli import main; main()"]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        **extra,
    }


def _stop(proc: subprocess.Popen[bytes], log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise
    text = log.read_text()
    assert code == 0, text[-3000:]
    return text


def test_scrape_process_scrapes_every_interval_and_stops_cleanly(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    own = CollectorRegistry()
    Counter("cli_scraped", "Requests.", registry=own).inc(3)
    api = ApiServer(own, "127.0.0.1", 0).start()
    target = "{}:{}".format(*api.address)
    config = tmp_path / "scrape.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 500ms}\n"
        "scrape_configs:\n"
        f"  - job_name: app\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = tmp_path / "scrape.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*MONITORING, "scrape", "--config", str(config)],
            env=_env(settings, MONITORING_SCRAPE__METRICS_PORT="0"),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        got = consume_samples(
            settings.kafka.bootstrap_servers,
            topic_name(settings.kafka, SAMPLES),
            lambda s: len({x.timestamp_ms for _, x in s if x.name == "up"}) >= 2,
        )
    finally:
        try:
            text = _stop(proc, log)
        finally:
            api.stop()
    ups = [s for _, s in got if s.name == "up"]
    assert len({s.timestamp_ms for s in ups}) >= 2, log.read_text()[-3000:]
    assert {s.value for s in ups} == {1.0}
    assert ups[0].labels == {"job": "app", "instance": target}
    counter = [s for _, s in got if s.name == "cli_scraped_total"]
    assert counter and counter[0].value == 3.0 and counter[0].kind == "COUNTER"
    assert "scraper stopped" in text and '"undelivered": 0' in text


def test_scrape_refuses_a_bad_config(tmp_path: Path) -> None:
    config = tmp_path / "scrape.yml"
    config.write_text("scrape_configs:\n  - job_name: x\n    kubernetes_sd_configs: []\n")
    done = subprocess.run(
        [*MONITORING, "scrape", "--config", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "kubernetes_sd_configs" in done.stderr and "not supported" in done.stderr


def test_collect_system_process_collects_every_interval_and_stops_cleanly(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    log = tmp_path / "collect.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*MONITORING, "collect", "system"],
            env=_env(
                settings,
                MONITORING_COLLECTION__INTERVAL="1s",
                MONITORING_SYSTEM_COLLECTOR__METRICS_PORT="0",
                MONITORING_SYSTEM_COLLECTOR__GPU="false",
            ),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        got = consume_samples(
            settings.kafka.bootstrap_servers,
            topic_name(settings.kafka, SAMPLES),
            lambda s: len({x.timestamp_ms for _, x in s if x.name == "node_load1"}) >= 2,
        )
    finally:
        text = _stop(proc, log)
    loads = [s for _, s in got if s.name == "node_load1"]
    assert len({s.timestamp_ms for s in loads}) >= 2, text[-3000:]
    assert "system collector stopped" in text and '"undelivered": 0' in text
