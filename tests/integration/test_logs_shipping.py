"""The log handler when the broker is down: the application keeps running, the
shipper drops its oldest records and counts them, and delivers the rest once the
broker is reachable. "Down" is a loopback port nobody listens on; "back" is a TCP
forwarder to the real broker started on that port later. Also: `monitoring logs
ship` follows a file through rotation into the logs topic."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.agents import wait_for
from fixtures.progress import read_to_end
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.dev.deploy import BIN, free_port
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.runtime.topics import LOGS, topic_name
from monitoring.sdk.log_shipping import KafkaLogHandler, LogShipper
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration]
CODEC = AvroCodec.from_directory()


class Forwarder:
    """Accepts on 127.0.0.1:port and pipes each connection to ``target``."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", port))
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.server.close()


def consume_messages(bootstrap: str, topic: str, n: int, timeout: float = 60) -> list[str]:
    """The messages on ``topic`` once it holds at least ``n``: every record up to the
    topic's end at that point (anything extra produced by then is in)."""
    got: list[str] = []

    def enough() -> bool:
        got[:] = [m for rec in read_to_end(bootstrap, topic) for m in messages(rec.value())]
        return len(got) >= n

    wait_for(enough, timeout, f"{n} messages on {topic}")
    return got


def messages(value: bytes) -> list[str]:
    """The messages of a LogRecord (one) or a LogBatch (many)."""
    rec = CODEC.decode(value).record
    return list(rec["messages"]) if "messages" in rec else [rec["message"]]


def test_handler_with_broker_down_drops_counts_and_recovers(
    kafka_bootstrap: str, kafka_settings: Settings
) -> None:
    port = free_port()  # nothing listens here: the broker is "down"
    registry = CollectorRegistry()
    topic = topic_name(kafka_settings.kafka, LOGS)
    shipper = LogShipper(
        f"127.0.0.1:{port}",
        topic,
        "app",
        buffer_size=100,
        max_in_flight=10,
        registry=registry,
        producer_config={"reconnect.backoff.max.ms": 500, "log_level": 0},
    )
    logger = logging.getLogger("test.app.down")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(KafkaLogHandler(shipper))
    started = time.monotonic()
    for i in range(10):
        logger.info("event %d", i)
    # librdkafka holds 10
    wait_for(lambda: shipper.in_flight == 10 and not shipper.buffer, 30, "10 in flight")
    for i in range(10, 1000):
        logger.info("event %d", i, extra={"user": "u1"})
    # the application was never held up by the missing broker (it would wait minutes)
    assert time.monotonic() - started < 20
    wait_for(lambda: shipper.dropped >= 1000 - 100 - 10, 30, "the oldest records dropped")
    assert shipper.dropped == 1000 - 100 - 10
    dropped = registry.get_sample_value(
        "monitoring_log_shipper_records_total", {"outcome": "dropped"}
    )
    assert dropped == 890
    assert registry.get_sample_value("monitoring_log_shipper_pending") == 110
    assert shipper.delivered == 0
    # the broker comes back on that port
    host, _, bport = kafka_bootstrap.rpartition(":")
    fwd = Forwarder(port, (host, int(bport)))
    try:
        assert shipper.flush(60) == 0
        assert shipper.delivered == 110 and shipper.failed == 0
        got = consume_messages(kafka_bootstrap, topic, 110)
    finally:
        shipper.close(5)
        fwd.close()
    # the oldest records were dropped: the first 10 (already in flight) and the last 100
    assert sorted(got) == sorted([f"event {i}" for i in (*range(10), *range(900, 1000))])
    assert (
        registry.get_sample_value("monitoring_log_shipper_records_total", {"outcome": "delivered"})
        == 110
    )


def test_ship_cli_follows_rotation(
    kafka_bootstrap: str, kafka_settings: Settings, tmp_path: Path
) -> None:
    log = tmp_path / "app.log"
    log.write_text("2024-01-01 INFO first line\n")
    env = {
        **os.environ,
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "MONITORING_KAFKA__TOPIC_PREFIX": kafka_settings.kafka.topic_prefix,
        "MONITORING_CONFIG": str(tmp_path / "none.yaml"),
    }
    (tmp_path / "none.yaml").write_text("{}\n")
    proc = subprocess.Popen(
        [
            str(BIN),
            "logs",
            "ship",
            str(log),
            "--service",
            "legacy",
            "--from-start",
            "--poll",
            "0.1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    topic = topic_name(kafka_settings.kafka, LOGS)
    try:
        # the first line arrives once the command runs (it takes seconds to start)
        assert consume_messages(kafka_bootstrap, topic, 1) == ["2024-01-01 INFO first line"]
        with log.open("a") as f:
            f.write("ERROR job 7 failed\nTraceback (most recent call last):\n  File x\n")
            f.write("WARN half")
        # the record before "WARN half" is complete once the shipper has read that far
        consume_messages(kafka_bootstrap, topic, 2)
        log.rename(tmp_path / "app.log.1")  # rotation: the tail of the old file still counts
        with (tmp_path / "app.log.1").open("a") as f:
            f.write(" line\n")
        log.write_bytes(b"INFO after rotation caf\xe9\n")
        consume_messages(kafka_bootstrap, topic, 4)  # the shipper is through both files
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    got = consume_messages(kafka_bootstrap, topic, 4)
    assert got == [
        "2024-01-01 INFO first line",
        "ERROR job 7 failed\nTraceback (most recent call last):\n  File x",
        "WARN half line",
        "INFO after rotation caf\ufffd",
    ]


def test_worker_ships_its_own_logs_through_the_pipeline(
    pipeline_factory: Callable[..., Pipeline],
) -> None:
    p = pipeline_factory(LOGS__SHIP_OWN_LOGS="true", LOGS__CHECKPOINT_INTERVAL="500ms")
    p.start_store()
    p.start("worker", "worker")
    sql = (
        "SELECT count(), countIf(message = 'logs_partition_restored') FROM logs "
        "WHERE service = 'monitoring-worker'"
    )
    p.wait(lambda: p.query(sql)[0][1] > 0, 120, f"the worker's own logs stored\n{p.logs()}")
