"""``monitoring bench faust-baseline``: what Faust itself costs per message here.

Fills a fresh 6-partition topic with small messages, then runs a Faust worker whose
agent only counts them (``noack``, or with Faust's automatic acks), or whose bulk
handler (``runtime.bulk``, as the aggregation agent reads samples) counts and acks
them, and prints messages/s from the first message to the last and the CPU time per
message. The gap between this and the aggregation worker's one-sample-per-message
rate is our code; the rest is the framework's per-message cost on this machine.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from monitoring.config import KafkaSettings
from monitoring.runtime.admin import ensure_topics
from monitoring.runtime.kafka_client import client_config
from monitoring.runtime.topics import TopicSpec

MODES = ("noack", "auto-ack", "bulk")


def fill(bootstrap: str, topic: str, n: int, size: int = 100) -> None:
    """Create ``topic`` and write ``n`` keyed messages of ``size`` bytes."""
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [TopicSpec(topic, 6)])
    p = Producer(client_config(bootstrap, **{"linger.ms": 50}))
    payload = b"x" * size
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, str(i).encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def run(bootstrap: str, n: int, mode: str) -> None:
    """Fill a topic, consume it (``mode``: noack, auto-ack or bulk), print the rate and
    exit the process."""
    from faust.worker import Worker

    from monitoring.runtime.bulk import BulkApp

    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    topic = f"bench-faust-{uuid.uuid4().hex[:8]}"
    fill(bootstrap, topic, n)
    app = BulkApp(
        topic,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-baseline-"),
        consumer_auto_offset_reset="earliest",
    )
    state: dict[str, float] = {"n": 0, "t0": 0.0, "cpu0": 0.0}

    def counted(k: int) -> None:
        if state["n"] == 0:
            state["t0"], state["cpu0"] = time.perf_counter(), time.process_time()
        state["n"] += k
        if state["n"] >= n:
            wall = time.perf_counter() - state["t0"]
            cpu_us = (time.process_time() - state["cpu0"]) / n * 1e6
            print(
                f"faust_baseline messages={n} mode={mode} msgs_per_s={(n - 1) / wall:.0f} "
                f"cpu_us_per_msg={cpu_us:.1f}",
                flush=True,
            )
            os._exit(0)  # the measurement is done; skip the worker's slow shutdown

    if mode == "bulk":

        async def handle(messages: Any) -> None:
            for m in messages:
                await app.ack(m)
            counted(len(messages))

        app.bulk(app.topic(topic), handle)
    else:

        @app.agent(app.topic(topic))
        async def count(stream: Any) -> None:
            source = stream if mode == "auto-ack" else stream.noack()
            async for _ in source.events():
                counted(1)

    Worker(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()
