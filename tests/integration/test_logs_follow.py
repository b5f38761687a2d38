"""``monitoring logs search --follow`` against a running store: it prints the stored
matches first (oldest first), then every new match once as it is stored, never a line
that does not match, and exits cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import IO

import pytest

from monitoring.dev.deploy import BIN
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.runtime.topics import LOGS
from monitoring.sdk.log_shipping import LogShipper

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "zebracorn"


def records(n: int, start_ms: int, tag: str) -> list[tuple[int, str, str]]:
    """(timestamp, level, message): every third message holds the token."""
    out = []
    for i in range(n):
        text = f"{tag} request {i} {TOKEN} seen" if i % 3 == 0 else f"{tag} request {i} served"
        out.append((start_ms + i * 10, "ERROR" if i % 3 == 0 else "INFO", text))
    return out


def ship(p: Pipeline, recs: list[tuple[int, str, str]]) -> None:
    shipper = LogShipper(p.settings.kafka.bootstrap_servers, p.topic(LOGS), "unused")
    for ts, level, message in recs:
        shipper.submit((ts, "checkout", "web-1", level, "app", message, "", "", "", {}))
    assert shipper.close(60) == 0


def reader(stream: IO[str], out: queue.Queue[str]) -> None:
    for line in stream:
        out.put(line)


def collect(lines: queue.Queue[str], want: int, timeout: float) -> list[dict[str, object]]:
    got: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            got.append(json.loads(lines.get(timeout=0.5)))
    return got


def test_search_follow_streams_new_matches_once(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(LOGS__IDLE_TIMEOUT="2s", LOGS__CHECKPOINT_INTERVAL="500ms")
    p.start_store()
    p.start("worker", "worker")
    now = int(time.time() * 1000)
    before, after = records(30, now - 20_000, "early"), records(30, now - 5_000, "late")
    ship(p, before)
    p.wait(
        lambda: p.query("SELECT count() FROM logs FINAL")[0][0] == len(before),
        120,
        f"the first logs stored\n{p.logs()}",
    )
    follower = subprocess.Popen(
        [str(BIN), "logs", "search", TOKEN, "--since", "1h", "--follow", "--format", "json"],
        env=p.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        reading = threading.Thread(target=reader, args=(follower.stdout, lines), daemon=True)
        reading.start()
        first = [(ts, m) for ts, lv, m in before if TOKEN in m]
        shown = collect(lines, len(first), 60)
        assert [(r["ts_ms"], r["message"]) for r in shown] == first  # oldest first
        ship(p, after)
        fresh = [(ts, m) for ts, lv, m in after if TOKEN in m]
        streamed = collect(lines, len(fresh), 90)
        assert [(r["ts_ms"], r["message"]) for r in streamed] == fresh
        assert all(r["level"] == "ERROR" and r["service"] == "checkout" for r in streamed)
        # a later match, stored after them: polls go on until it shows, and nothing
        # before it is printed twice
        sentinel = records(1, now - 1_000, "sentinel")
        ship(p, sentinel)
        shown_last = collect(lines, 1, 90)
        assert [(r["ts_ms"], r["message"]) for r in shown_last] == [
            (sentinel[0][0], sentinel[0][2])
        ]
        follower.send_signal(signal.SIGINT)
        assert follower.wait(30) == 0
        reading.join(30)  # stdout closed: every line the follower printed is read
        assert lines.empty()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
