"""``monitoring bench alerts``, live part: window close -> alert on the topic -> webhook.

On the local broker, as separate processes: a worker (aggregation only), the alert
evaluator with the generated rules (``bench/alerts.py``: 1,000 rules of realistic
shapes) and the notifier delivering every alert to a local webhook at once
(``group_by: ['...']``, ``group_wait: 0s``). This process produces the series in real
time (one sample per series per second, values from the same random walks) and
records:

- the close time of each 10 s window end ``T``: the latest Kafka timestamp of the
  aggregates for ``T`` (the aggregation agent's produce time). With close marks (the
  default deployment) that is the Kafka timestamp of the marked record completing
  ``T`` on each partition, the latest over partitions, and other records are not
  decoded: this process then costs the machine little while it measures;
- each alert's Kafka timestamp on the alerts topic and its ``evaluated_at_ms`` (= the
  ``T`` whose evaluation changed it): alert latency = alert time - close time of ``T``;
- each webhook request's arrival time: delivery latency = arrival - close time of the
  ``T`` of the alert it carries (firing alerts, first delivery).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer

from monitoring.bench.alerts import METRICS, PHI, make_rules, make_series
from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.metrics.collector import MetricsCollector
from monitoring.runtime.kafka_client import client_config
from monitoring.wire.aggregate_encoding import AggregateDecoder, closed_through
from monitoring.wire.codec import AvroCodec

WINDOW_MS = 10_000


@dataclass
class LatencyResult:
    """Latencies in ms, and what they were measured over."""

    alert_ms: list[float] = field(default_factory=list)
    delivery_ms: list[float] = field(default_factory=list)
    closes: int = 0
    samples_per_s: float = 0.0
    by_end: dict[int, list[float]] = field(default_factory=dict)
    """Alert latencies per window end (a slow end shows as one cluster)."""


def rules_yaml(n: int, seed: int = 0) -> str:
    """The generated rules as a Prometheus rule file."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in make_rules(n, seed):
        rule: dict[str, Any] = {"alert": r.name, "expr": r.expr, "labels": dict(r.labels)}
        if r.for_ms:
            rule["for"] = f"{r.for_ms // 1000}s"
        groups.setdefault(r.group or "g", []).append(rule)
    return yaml.safe_dump({"groups": [{"name": g, "rules": rs} for g, rs in groups.items()]})


class _Webhook:
    """Records (arrival ms, body) of every POST."""

    def __init__(self) -> None:
        self.got: list[tuple[float, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                owner.got.append((time.time() * 1000, json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"


def _produce(d: LocalDeployment, series: int, seconds: float, stop: threading.Event) -> int:
    import random

    rnd = random.Random(1)
    ss = make_series(series)
    values = [METRICS[name][0] for _, name, _ in ss]
    n = 0
    with MetricsCollector(d.settings, batch=True, linger=0.05) as mc:
        t_end = time.time() + seconds
        tick = 0
        while time.time() < t_end and not stop.is_set():
            now = int(time.time() * 1000)
            for i, (_, name, labels) in enumerate(ss):
                mean, sd = METRICS[name]
                if tick % 10 == 0:
                    if name.endswith("_total"):
                        values[i] += rnd.random() * sd
                    else:
                        values[i] = mean + PHI * (values[i] - mean) + rnd.gauss(0, sd * 0.43)
                mc.record(name, values[i], labels, timestamp_ms=now)
            n += len(ss)
            tick += 1
            time.sleep(max(0.0, 1.0 - (time.time() * 1000 - now) / 1000))
        mc.flush(60)
    return n


def run(
    bootstrap: str,
    rules: int = 1_000,
    series: int = 10_000,
    seconds: float = 90,
    progress: Callable[[str], None] = lambda _: None,
) -> LatencyResult:
    """Run the live pipeline for ``seconds`` and return the measured latencies."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-alerts-"))
    hook = _Webhook()
    (tmp / "rules.yml").write_text(rules_yaml(rules))
    (tmp / "notifier.yml").write_text(
        yaml.safe_dump(
            {
                "route": {
                    "receiver": "hook",
                    "group_by": ["..."],
                    "group_wait": "0s",
                    "group_interval": "1s",
                    "repeat_interval": "1h",
                },
                "receivers": [{"name": "hook", "webhook_configs": [{"url": hook.url}]}],
            }
        )
    )
    d = LocalDeployment(
        bootstrap,
        tmp,
        aggregation__windows='["10s"]',
        anomaly__enabled="false",
        alerting__rules=f'["{tmp / "rules.yml"}"]',
        notifier__config=str(tmp / "notifier.yml"),
        notifier__api_port=str(free_port()),
    )
    codec = AvroCodec.from_directory()
    aggregates = AggregateDecoder(codec)
    consumer = Consumer(
        client_config(
            d.settings.kafka,
            **{
                "group.id": f"bench-{d.prefix}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            },
        )
    )
    consumer.subscribe([d.topic("metrics.aggregates"), d.topic("alerts")])
    closes: dict[int, float] = {}
    marked: dict[int, int] = {}  # partition -> complete through (its last mark)
    alerts: list[tuple[str, str, int, float]] = []  # fingerprint, status, T, kafka ms
    res = LatencyResult()
    stop = threading.Event()
    try:
        d.start("worker", "worker")
        d.start("alerting", "alerting")
        d.start("notifier", "notifier")
        progress(f"producing {series:,} series for {seconds:.0f} s with {rules:,} rules")
        sent: list[int] = []
        producer = threading.Thread(
            target=lambda: sent.append(_produce(d, series, seconds, stop)), daemon=True
        )
        t0 = time.time()
        producer.start()
        while producer.is_alive() or time.time() - t0 < seconds + 15:
            for m in consumer.consume(5000, timeout=0.2):
                if m.error() is not None:
                    continue
                ts = float(m.timestamp()[1])
                if m.topic() == d.topic("alerts"):
                    rec = codec.decode(m.value()).record
                    alerts.append((rec["fingerprint"], rec["status"], rec["evaluated_at_ms"], ts))
                    continue
                part = m.partition() or 0
                mark = closed_through(m.headers())
                if mark is not None:
                    prev = marked.get(part, mark - mark % WINDOW_MS - WINDOW_MS)
                    for end in range(prev - prev % WINDOW_MS + WINDOW_MS, mark + 1, WINDOW_MS):
                        closes[end] = max(closes.get(end, 0.0), ts)
                    marked[part] = max(prev, mark)
                elif part not in marked:  # a deployment without marks: decode them all
                    agg = aggregates.decode(m.value())
                    if agg.window_ms == WINDOW_MS:
                        end = agg.window_end_ms
                        closes[end] = max(closes.get(end, 0.0), ts)
            if time.time() - t0 > seconds + 60:
                break
        res.samples_per_s = (sent[0] if sent else 0) / seconds
    finally:
        stop.set()
        consumer.close()
        d.stop_all()
        hook.server.shutdown()
    res.closes = len(closes)
    first_t: dict[tuple[str, str], int] = {}
    for fp, status, t, ts in alerts:
        if t in closes:
            res.alert_ms.append(ts - closes[t])
            res.by_end.setdefault(t, []).append(ts - closes[t])
        first_t.setdefault((fp, status.lower()), t)
    seen: set[tuple[str, str]] = set()
    for arrived, body in hook.got:
        for a in body.get("alerts", []):
            key = (a["fingerprint"], a["status"])
            if key in seen or key not in first_t or key[1] != "firing":
                continue
            seen.add(key)
            t = first_t[key]
            if t in closes:
                res.delivery_ms.append(arrived - closes[t])
    return res
