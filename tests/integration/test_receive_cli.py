"""``monitoring receive`` as a process: it serves both routes on the configured port,
puts what it receives on the samples topic, stops cleanly on SIGTERM with nothing left
undelivered, and refuses to bind off loopback without a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fixtures.receive import RW_HEADERS, TopicReader, snappy

from monitoring.config import Settings
from monitoring.ingest.prompb import WriteRequest

pytestmark = pytest.mark.integration

MONITORING = [sys.executable, "-c", "from monitoring.cli import main; main()"]


def _env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": settings.kafka.topic_prefix,
        **extra,
    }


def _listening(log: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        for line in log.read_text().splitlines():
            if '"receive_listening"' in line:
                return str(json.loads(line)["remote_write"])
        time.sleep(0.05)  # polling a condition
    raise AssertionError(f"not listening: {log.read_text()[-2000:]}")


def test_receive_serves_and_stops_cleanly(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = settings_factory()
    log = tmp_path / "receive.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*MONITORING, "receive", "--port", "0"], env=_env(settings),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    reader = TopicReader(settings)
    try:
        url = _listening(log, proc)
        now = time.time_ns() // 10**6
        req = WriteRequest()
        ts = req.timeseries.add()
        ts.labels.add(name="__name__", value="cli_test_total")
        ts.labels.add(name="job", value="x")
        ts.samples.add(value=42.0, timestamp=now)
        r = httpx.post(url, content=snappy(req.SerializeToString()), headers=RW_HEADERS)
        assert r.status_code == 204, r.text
        health = httpx.get(url.replace("/api/v1/write", "/healthz"))
        assert health.json()["status"] == "ok"
        reader.until(lambda s: len(s) >= 1, 30, "the sample on the topic")
        s = reader.samples[0]
        assert (s.series, s.timestamp_ms, s.value, s.kind) == (
            'cli_test_total{job="x"}',
            now,
            42.0,
            "COUNTER",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert '"undelivered": 0' in log.read_text()
    finally:
        reader.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_receive_refuses_off_loopback_without_a_token(
    settings_factory: Callable[..., Settings],
) -> None:
    settings = settings_factory(ensure=False)
    done = subprocess.run(
        [*MONITORING, "receive", "--host", "0.0.0.0", "--port", "0"],
        env=_env(settings), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "api.token" in done.stderr
