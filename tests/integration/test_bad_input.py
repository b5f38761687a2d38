"""Bad input on the samples topic, end to end: every undecodable or invalid message
goes to the dead-letter topic exactly once (original bytes, reason and source
coordinates in headers), the worker counts it by reason, and the good data around it
(including the good samples of a partly bad batch) aggregates exactly as the oracle
says."""

from __future__ import annotations

import json
import math
import random
import re
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from fixtures.dataset import Point, generate, oracle

from integration.test_pipeline_e2e import check_against_oracle, recent_start
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.dev.deploy import free_port
from monitoring.metrics.samples import series_key
from monitoring.wire.codec import MARKER, AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SAMPLE = "monitoring.MetricSample"
BATCH = "monitoring.MetricBatch"


@dataclass
class Msg:
    key: bytes
    value: bytes | None
    reason: str | None = None  # expected x-reason; None for good messages
    rejected: str | None = None  # expected x-rejected-samples
    partition: int = -1
    offset: int = -1


def sample(name: str, value: float, ts: int, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "value": value, "timestamp_ms": ts, "labels": labels}


def batch(
    series: list[tuple[str, dict[str, str]]],
    index: list[int],
    stamps: list[int],
    values: list[float],
) -> dict[str, Any]:
    return {
        "source": "test",
        "series": [series_key(n, lb) for n, lb in series],
        "series_index": index,
        "timestamps_ms": stamps,
        "values": values,
    }


def bad_messages(codec: AvroCodec, mid_ms: int) -> tuple[list[Msg], list[Point]]:
    """Every kind of bad message, and the good points hidden in partly bad batches."""
    rng = random.Random(3)
    good = sample("bad_input_probe", 1.0, mid_ms, {"host": "x"})
    body = codec.encode(SAMPLE, good)[len(MARKER) + 8 :]
    garbage = bytes([0x00]) + rng.randbytes(63)  # never starts with the c301 marker
    unknown_fp = MARKER + rng.randbytes(8) + body
    assert not any(v.header == unknown_fp[:10] for v in codec.versions())

    def enc(name: str, value: float, ts: int, labels: dict[str, str]) -> bytes:
        return codec.encode(SAMPLE, sample(name, value, ts, labels))

    many = {f"l{i:03d}": "v" for i in range(100)}
    # First, right after tick 30 (the watermark is below mid_ms - 5 s), a batch with
    # one NaN among good samples: the good ones are aggregated.
    name, labels = "batch_gauge", {"src": "batch"}
    stamps = [mid_ms - 600 + 100 * i for i in range(6)]
    values = [0.5, 1.25, math.nan, 3.0, 4.125, 2.0]
    msgs = [
        Msg(
            series_key(name, labels).encode(),
            codec.encode(BATCH, batch([(name, labels)], [0] * 6, stamps, values)),
            "non-finite-value",
            rejected="2",
        )
    ]
    points = [
        Point(name, labels, t, v, False)
        for t, v in zip(stamps, values, strict=True)
        if math.isfinite(v)
    ]
    # A batch whose second series key is not valid (label name "1x"): its samples are
    # rejected, the first series' are kept.
    name2, labels2 = "batch_gauge", {"src": "batch2"}
    stamps2 = [mid_ms - 400, mid_ms - 300, mid_ms - 200, mid_ms - 100]
    values2 = [7.0, 8.0, 9.0, 10.5]
    msgs.append(
        Msg(
            series_key(name2, labels2).encode(),
            codec.encode(
                BATCH,
                batch(
                    [(name2, labels2), ("bad_input_probe", {"1x": "v"})],
                    [0, 1, 0, 1],
                    stamps2,
                    values2,
                ),
            ),
            "bad-series-key",
            rejected="1,3",
        )
    )
    points += [Point(name2, labels2, stamps2[i], values2[i], False) for i in (0, 2)]
    msgs += [
        Msg(b"garbage", garbage, "bad-marker"),
        Msg(b"short", rng.randbytes(5), "truncated"),
        Msg(b"empty", b"", "truncated"),
        Msg(b"tombstone", None, "not-bytes"),
        Msg(b"unknown-fp", unknown_fp, "unknown-fingerprint"),
        Msg(b"cut", codec.encode(SAMPLE, good)[:-12], "bad-body"),
        Msg(b"trailing", codec.encode(SAMPLE, good) + b"\x00", "trailing-bytes"),
        Msg(b"nan", enc("bad_input_probe", math.nan, mid_ms, {"k": "nan"}), "non-finite-value"),
        Msg(b"inf", enc("bad_input_probe", math.inf, mid_ms, {"k": "inf"}), "non-finite-value"),
        Msg(b"1970", enc("bad_input_probe", 1.0, 86_400_000, {"k": "old"}), "timestamp-too-old"),
        Msg(
            b"2200",
            enc("bad_input_probe", 1.0, 7_258_118_400_000, {"k": "future"}),
            "timestamp-in-future",
        ),
        Msg(b"labels", enc("bad_input_probe", 1.0, mid_ms, many), "too-many-labels"),
        Msg(b"long", enc("bad_input_probe", 1.0, mid_ms, {"k": "x" * 10_240}), "label-too-long"),
        Msg(b"name", enc("bad-name!", 1.0, mid_ms, {"k": "v"}), "bad-name"),
        Msg(
            b"label-name",
            enc("bad_input_probe", 1.0, mid_ms, {"__reserved": "v"}),
            "bad-label-name",
        ),
        Msg(
            b"mismatch",
            codec.encode(BATCH, batch([("bad_input_probe", {})], [0, 0], [mid_ms], [1.0, 2.0])),
            "batch-length-mismatch",
        ),
        Msg(
            b"index",
            codec.encode(
                BATCH, batch([("bad_input_probe", {})], [0, 1], [mid_ms, mid_ms], [1.0, 2.0])
            ),
            "bad-series-index",
        ),
    ]
    return msgs, points


def produce_all(bootstrap: str, topic: str, msgs: list[Msg]) -> None:
    """Send in order and record where each message landed."""
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "partitioner": "murmur2_random",
            "linger.ms": 5,
            "enable.idempotence": True,
        }
    )
    for m in msgs:

        def done(err: KafkaError | None, rec: Any, m: Msg = m) -> None:
            assert err is None, err
            m.partition, m.offset = rec.partition(), rec.offset()

        p.produce(topic, key=m.key, value=m.value, on_delivery=done)
        p.poll(0)
    assert p.flush(60) == 0
    assert all(m.offset >= 0 for m in msgs)


def read_dead_letters(p: Pipeline, expected_n: int, timeout: float = 60) -> list[Any]:
    c = Consumer(
        {
            "bootstrap.servers": p.settings.kafka.bootstrap_servers,
            "group.id": f"dlq-{p.prefix}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([p.topic("dead-letter")])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    quiet_until = None
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
        if len(out) >= expected_n:
            # keep reading a little: a duplicate would arrive now
            quiet_until = quiet_until or time.monotonic() + 3
            if time.monotonic() > quiet_until:
                break
    c.close()
    return out


def scrape(port: int) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():  # the aggregation agent's: (name, reason) -> value
        m = re.match(r"^(\w+)(?:\{([^}]*)\})? (\S+)$", line)
        labels = (m.group(2) or "") if m else ""
        if m and ('agent="' not in labels or 'agent="aggregation"' in labels):
            reason = re.search(r'reason="([^"]*)"', labels)
            out[(m.group(1), reason.group(1) if reason else "")] = float(m.group(3))
    return out


def test_bad_input_is_dead_lettered_and_good_data_is_exact(pipeline: Pipeline) -> None:
    codec = AvroCodec.from_directory()
    ticks = 60
    start = recent_start(ticks)
    points = generate(n_series=20, ticks=ticks, start_ms=start)
    # bad messages go in the second half; the batches first, where mid_ms is on time
    mid_ms = start + 30_000
    bad, batch_points = bad_messages(codec, mid_ms)
    expected = oracle(points + batch_points, pipeline.settings.aggregation.windows_ms)

    good = [
        Msg(
            series_key(pt.name, pt.labels).encode(),
            codec.encode(SAMPLE, sample(pt.name, pt.value, pt.timestamp_ms, pt.labels)),
        )
        for pt in points
    ]
    per_tick = len(points) // ticks
    msgs = good[: 31 * per_tick]  # ticks 0..30, so the watermark is below mid_ms - 600
    rest = good[31 * per_tick :]
    step = len(rest) // len(bad)
    for i, b in enumerate(bad):
        msgs.append(b)
        msgs.extend(rest[i * step : (i + 1) * step])
    msgs.extend(rest[len(bad) * step :])
    assert len(msgs) == len(good) + len(bad)

    port = free_port()
    pipeline.start_store()
    pipeline.start("worker", "worker", worker__metrics_port=str(port))
    samples_topic = pipeline.topic("metrics.samples")
    produce_all(pipeline.settings.kafka.bootstrap_servers, samples_topic, msgs)

    check_against_oracle(pipeline, expected)
    # the store skipped the bad input too: one raw row per good (series, timestamp,
    # value); two values of a series in one millisecond are two samples (migration 008)
    distinct = {
        (series_key(x.name, x.labels), x.timestamp_ms, x.value) for x in points + batch_points
    }
    pipeline.wait(
        lambda: pipeline.query("SELECT count() FROM samples FINAL")[0][0] == len(distinct),
        30,
        "raw samples",
    )

    # every bad message is on the dead-letter topic exactly once, as it was sent
    dead = read_dead_letters(pipeline, len(bad))
    by_source: dict[tuple[int, int], list[Any]] = {}
    for m in dead:
        h = {k: v.decode() for k, v in m.headers() or []}
        assert h["x-source-topic"] == samples_topic, h
        assert h["x-stage"] == "aggregation", h
        assert h["x-error"], h
        src = (int(h["x-source-partition"]), int(h["x-source-offset"]))
        by_source.setdefault(src, []).append((m, h))
    want = {(b.partition, b.offset): b for b in bad}
    assert len(want) == len(bad)
    assert set(by_source) == set(want), (sorted(by_source), sorted(want))
    for src, b in want.items():
        copies = by_source[src]
        assert len(copies) == 1, (b.key, len(copies))
        m, h = copies[0]
        assert h["x-reason"] == b.reason, (b.key, h)
        assert m.key() == b.key, b.key
        assert m.value() == b.value, (b.key, m.value())
        assert h.get("x-rejected-samples") == b.rejected, (b.key, h)

    # the worker counts them by reason, and counts the batches' good samples
    want_counts = Counter(str(b.reason) for b in bad)
    want_samples = len(points) + len(batch_points)

    def counted() -> bool:
        now = scrape(port)
        return all(
            now.get(("agent_dead_letters_total", r)) == n for r, n in want_counts.items()
        ) and (
            now.get(("agent_messages_total", "")) == len(msgs)
            and now.get(("agent_items_total", "")) == want_samples
        )

    try:
        pipeline.wait(counted, 20, "worker metrics")
    except TimeoutError:
        seen = scrape(port)
        raise AssertionError(
            {k: v for k, v in seen.items() if k[0].startswith(("aggregation_", "agent_"))}
        ) from None
    seen = scrape(port)
    assert {r for (n, r) in seen if n == "agent_dead_letters_total"} == set(want_counts)
    # the worker's health endpoint, next to its metrics: every partition, nothing lost
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        health = json.loads(r.read())
    assert health["status"] == "ok"
    partitions = pipeline.settings.kafka.samples_partitions
    assert health["aggregation"]["partitions"] == list(range(partitions))
