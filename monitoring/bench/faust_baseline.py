"""``monitoring bench faust-baseline``: what Faust itself costs per message here.

Fills a fresh 6-partition topic with small messages, then runs a Faust worker whose
agent only counts them (``noack`` as the aggregation agent does, or with Faust's
automatic acks), and prints messages/s from the first message to the last. The gap
between this and the aggregation worker's one-sample-per-message rate is our code;
the rest is the framework's per-message cost on this machine.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any

from confluent_kafka import Producer

from monitoring.config import KafkaSettings
from monitoring.streams.admin import ensure_topics
from monitoring.streams.topics import TopicSpec


def fill(bootstrap: str, topic: str, n: int, size: int = 100) -> None:
    """Create ``topic`` and write ``n`` keyed messages of ``size`` bytes."""
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [TopicSpec(topic, 6)])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50})
    payload = b"x" * size
    for i in range(n):
        while True:
            try:
                p.produce(topic, payload, str(i).encode())
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def run(bootstrap: str, n: int, acks: bool) -> None:
    """Fill a topic, consume it with a counting agent, print the rate, exit the process."""
    import faust
    from faust.worker import Worker

    topic = f"bench-faust-{uuid.uuid4().hex[:8]}"
    fill(bootstrap, topic, n)
    app = faust.App(
        topic,
        broker=f"kafka://{bootstrap}",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        datadir=tempfile.mkdtemp(prefix="faust-baseline-"),
        consumer_auto_offset_reset="earliest",
    )
    state: dict[str, Any] = {"n": 0, "t0": 0.0}

    @app.agent(app.topic(topic))
    async def count(stream: Any) -> None:
        source = stream if acks else stream.noack()
        async for _ in source.events():
            if state["n"] == 0:
                state["t0"] = time.perf_counter()
            state["n"] += 1
            if state["n"] == n:
                rate = (n - 1) / (time.perf_counter() - state["t0"])
                mode = "auto-ack" if acks else "noack"
                print(f"faust_baseline messages={n} mode={mode} msgs_per_s={rate:.0f}", flush=True)
                os._exit(0)  # the measurement is done; skip the worker's slow shutdown

    Worker(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()
