"""Health and status against the real broker: consumer lag exactly against an oracle,
garbage on the status topic skipped and counted, readiness without a broker (a closed
port) and with one, and a real worker that goes ready after restoring, then shows as
stale once killed (``monitoring status`` exits 1) and as replaced once restarted."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from monitoring.api.server import ApiServer
from monitoring.cli import app
from monitoring.config import Settings
from monitoring.dev.deploy import LocalDeployment, free_port
from monitoring.ops import lag as lag_probe
from monitoring.ops.heartbeat import ProcessStatus
from monitoring.ops.status import Heartbeat
from monitoring.ops.status_kafka import gather, read_heartbeats
from monitoring.runtime.admin import admin_client
from monitoring.runtime.topics import SAMPLES, STATUS, topic_name
from monitoring.sdk.producer import MetricsCollector


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def with_health(settings: Settings, **health: Any) -> Settings:
    return settings.model_copy(
        update={
            "health": settings.health.model_validate({**settings.health.model_dump(), **health})
        }
    )


def test_lag_per_partition_equals_produced_minus_consumed(kafka_settings: Settings) -> None:
    k = kafka_settings.kafka
    topic = topic_name(k, SAMPLES)
    produced = {p: 5 + 3 * p for p in range(k.samples_partitions)}
    consumed = {p: n // 2 for p, n in produced.items() if p != 5}  # never commits on 5
    prod = Producer({"bootstrap.servers": k.bootstrap_servers})
    for p, n in produced.items():
        for i in range(n):
            prod.produce(topic, f"{p}:{i}".encode(), partition=p)
    assert prod.flush(30) == 0
    group = f"{k.topic_prefix}oracle"
    c = Consumer(
        {"bootstrap.servers": k.bootstrap_servers, "group.id": group, "enable.auto.commit": False}
    )
    c.assign([TopicPartition(topic, p, 0) for p in consumed])
    seen = {p: 0 for p in consumed}
    deadline = time.monotonic() + 60
    while any(seen[p] < m for p, m in consumed.items()) and time.monotonic() < deadline:
        for m in c.consume(100, timeout=0.5):
            assert m.error() is None
            p = m.partition() or 0
            if seen[p] < consumed[p]:
                seen[p] += 1
                c.commit(message=m, asynchronous=False)  # the offset after the M-th record
    c.close()
    assert seen == consumed

    offsets = lag_probe.CommittedOffsets(k.bootstrap_servers)
    rows = lag_probe.lag(
        admin_client(k.bootstrap_servers),
        [group],
        10,
        topic_prefix=k.topic_prefix,
        offsets=offsets,
    )
    assert {r.partition: r.lag for r in rows} == {p: produced[p] - m for p, m in consumed.items()}
    assert {r.partition: (r.committed, r.high) for r in rows} == {
        p: (m, produced[p]) for p, m in consumed.items()
    }
    # a process that owns partition 5 (never committed) has all of it to read
    owned = [(topic, p) for p in (0, 5)]
    mine = lag_probe.lag(
        admin_client(k.bootstrap_servers), [group], 10, only=owned, offsets=offsets
    )
    offsets.close()
    assert {r.partition: (r.committed, r.lag) for r in mine} == {
        0: (consumed[0], produced[0] - consumed[0]),
        5: (None, produced[5]),
    }
    report = gather(kafka_settings, timeout_s=10)  # every group with the deployment's prefix
    assert [r for r in report.lag if r.group == group] == rows
    assert report.errors == []


def test_garbage_on_the_status_topic_is_skipped_and_counted(kafka_settings: Settings) -> None:
    topic = topic_name(kafka_settings.kafka, STATUS)
    good = Heartbeat("store", "store@h:1", "h", 1, "0.1.0", 1, 2, 1000, True)
    gone = Heartbeat("worker", "worker@h:2", "h", 2, "0.1.0", 1, 2, 1000, True)
    prod = Producer({"bootstrap.servers": kafka_settings.kafka.bootstrap_servers})
    records: list[tuple[bytes | None, bytes | None]] = [
        (good.id.encode(), good.to_bytes()),
        (gone.id.encode(), gone.to_bytes()),
        (b"x", b"\x00\x01\x02 not json"),
        (b"someone-else", good.to_bytes()),  # a key that is not the record's id
        (b"v1", b'{"v": 1}'),  # (a compacted topic refuses a record without a key)
        (b"big", b"[" + b"1," * 20_000 + b"1]"),
        (gone.id.encode(), None),  # a clean stop: gone from the status
    ]
    errors: list[Any] = []
    for key, value in records:
        prod.produce(topic, value, key, on_delivery=lambda err, _m: errors.append(err))
    assert prod.flush(30) == 0 and errors == [None] * len(records)
    beats, skipped = read_heartbeats(kafka_settings, timeout_s=10)
    assert beats == [good]
    assert skipped == {"not-json": 1, "key-mismatch": 1, "bad-field": 1, "oversized": 1}


def test_heartbeats_kept_are_bounded(kafka_settings: Settings, monkeypatch: Any) -> None:
    from monitoring.ops import status_kafka

    monkeypatch.setattr(status_kafka, "MAX_PROCESSES", 2)
    prod = Producer({"bootstrap.servers": kafka_settings.kafka.bootstrap_servers})
    beats = [
        Heartbeat("worker", f"worker@h:{i}", "h", i, "0.1.0", 1, 2, 1000, True) for i in range(3)
    ]
    for hb in [*beats, beats[0]]:  # a newer heartbeat of a kept process still counts
        prod.produce(topic_name(kafka_settings.kafka, STATUS), hb.to_bytes(), hb.id.encode())
    assert prod.flush(30) == 0
    kept, skipped = read_heartbeats(kafka_settings, timeout_s=10)
    assert kept == beats[:2] and skipped == {"over 2 processes": 1}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once closed


def test_not_ready_without_a_broker_ready_with_one(kafka_settings: Settings) -> None:
    down = kafka_settings.model_copy(
        update={
            "kafka": kafka_settings.kafka.model_copy(
                update={"bootstrap_servers": f"127.0.0.1:{closed_port()}"}
            )
        }
    )
    health = {"status": "ok"}
    cases = [(with_health(down, heartbeat_interval="1s"), False),
             (with_health(kafka_settings, heartbeat_interval="1s"), True)]  # fmt: skip
    for settings, ready in cases:
        status = ProcessStatus(settings, "worker", lambda: health, lag_group="g-none")
        server = ApiServer(
            CollectorRegistry(), "127.0.0.1", 0, lambda: health, readiness=status.reasons
        ).start()
        try:
            before = httpx.get("http://{}:{}/-/ready".format(*server.address))
            assert before.status_code == 503  # the first round has not run
            status.tick()
            r = httpx.get("http://{}:{}/-/ready".format(*server.address))
            reasons = r.json()["reasons"]
            if ready:
                assert (r.status_code, reasons) == (200, [])
            else:
                assert r.status_code == 503
                assert any(x.startswith("broker unreachable") for x in reasons), reasons
                assert "127.0.0.1" in " ".join(reasons)
            assert httpx.get("http://{}:{}/-/healthy".format(*server.address)).status_code == 200
        finally:
            server.stop()
            status.stop(forget=ready)


def test_a_missing_status_topic_is_a_reason_not_created(settings_factory: Any) -> None:
    settings = with_health(settings_factory(ensure=False), heartbeat_interval="1s")
    status = ProcessStatus(settings, "receiver", lambda: {"status": "ok"})
    try:
        status.tick()
        topic = topic_name(settings.kafka, STATUS)
        assert status.reasons() == [
            f"status topic {topic} missing: run `monitoring broker topics create`"
        ]
        md = admin_client(settings.kafka.bootstrap_servers).list_topics(timeout=10)
        assert topic not in md.topics  # not auto-created with the broker's defaults
    finally:
        status.stop(forget=False)


def test_a_real_store_ready_once_it_caught_up_its_backlog(
    settings_factory: Any, tmp_path: Any
) -> None:
    """The store (the real one, in a thread, on chDB) is not ready while its group is more
    than health.ready_max_lag records behind, and ready once it stored and committed."""
    import threading
    import uuid

    from monitoring.sinks.clickhouse.connection import connect
    from monitoring.sinks.clickhouse.migrations import migrate
    from monitoring.sinks.clickhouse.store import Store
    from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    s = with_health(base.model_copy(update={"storage": storage}), ready_max_lag=5)
    with MetricsCollector(s, source="test", batch=False) as mc:
        now = int(time.time() * 1000)
        for i in range(60):
            mc.record("backlog", float(i), {"i": str(i)}, timestamp_ms=now + i)
    client = connect(s.storage.dsn)
    migrate(client, s.storage)
    group = f"{s.kafka.topic_prefix}store-{uuid.uuid4().hex[:8]}"
    store = Store(s, Writer(client, StoreMetrics(CollectorRegistry())), group_id=group)
    status = ProcessStatus(s, "store", store.health, lag_group=group)
    server = ApiServer(
        CollectorRegistry(), "127.0.0.1", 0, store.health, readiness=status.reasons
    ).start()
    url = "http://{}:{}/-/ready".format(*server.address)
    stop = threading.Event()
    t = threading.Thread(target=store.run, args=(stop,))
    try:
        status.tick()  # the group has no offsets yet: nothing of it to lag
        commit = Consumer({"bootstrap.servers": s.kafka.bootstrap_servers, "group.id": group})
        samples = topic_name(s.kafka, SAMPLES)
        commit.commit(  # as a store that stopped long ago would have left it
            offsets=[TopicPartition(samples, p, 0) for p in range(s.kafka.samples_partitions)],
            asynchronous=False,
        )
        commit.close()
        status.tick()
        r = httpx.get(url)
        assert r.status_code == 503
        assert r.json()["reasons"][0].startswith("catching up a backlog: ")
        t.start()

        def ready() -> bool:
            status.tick()
            return httpx.get(url).status_code == 200

        wait_for(ready, 60, "the store ready once it stored its backlog")
        assert int(client.query("SELECT count() FROM samples FINAL").result_rows[0][0]) == 60
    finally:
        stop.set()
        if t.is_alive():
            t.join(60)
        server.stop()
        status.stop(forget=False)
        client.close()


def aggregate_keys(d: LocalDeployment, prefix: bytes, timeout: float) -> list[bytes]:
    """Keys of the aggregates topic starting with ``prefix``, once there is one."""
    c = Consumer(
        {
            "bootstrap.servers": d.settings.kafka.bootstrap_servers,
            "group.id": f"{d.prefix}test-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([d.topic("metrics.aggregates")])
    found: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while not found and time.monotonic() < deadline:
            for m in c.consume(500, timeout=0.5):
                if m.error() is None and (m.key() or b"").startswith(prefix):
                    found.append(m.key() or b"")
    finally:
        c.close()
    assert found, f"no aggregate of {prefix!r} in {timeout} s"
    return found


def run_status(env: dict[str, str]) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["status", "--json", "--timeout", "10"], env=env)
    return result.exit_code, json.loads(result.stdout)


def test_a_worker_ready_after_restore_then_stale_when_killed_then_replaced(
    pipeline_factory: Callable[..., LocalDeployment],
) -> None:
    port = free_port()
    d = pipeline_factory(
        health__heartbeat_interval="1s", health__stale_after="6s", worker__metrics_port=str(port)
    )
    env = {k: v for k, v in d.env.items() if k.startswith("MONITORING_")}
    with MetricsCollector(d.settings, source="test") as mc:
        now = int(time.time() * 1000)
        for i in range(300):
            mc.record("status_test", float(i), {"i": str(i % 30)}, timestamp_ms=now - 20_000 + i)
    ready = f"http://127.0.0.1:{port}/-/ready"

    def is_ready() -> bool:
        try:
            return httpx.get(ready, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    first = d.start("worker", "worker")
    wait_for(is_ready, 120, f"the worker ready (log: {d.dir / 'worker.log'})")

    def worker_ok() -> dict[str, Any] | None:
        code, out = run_status(env)
        procs = [p for p in out["processes"] if p["kind"] == "worker"]
        committed = any(r["group"] == f"{d.prefix}worker" for r in out["lag"])
        if code == 0 and procs and procs[0]["ready"] and out["closed_through_ms"] and committed:
            return out
        return None

    out = wait_for(worker_ok, 90, "monitoring status: the worker alive, ready, its group's lag")
    [proc] = out["processes"]
    assert proc["pid"] == first.pid and proc["id"].startswith("worker@")
    assert out["dead_letters_last_hour"] == {}

    # the figures as the pipeline's own series: aggregated by the worker like any other
    exported = CliRunner().invoke(app, ["status", "--export", "--timeout", "10"], env=env)
    assert exported.exit_code == 0 and "exported" in exported.stdout, exported.stdout
    aggregated = aggregate_keys(d, b"kafka_consumergroup_lag{", 60)
    assert any(f'consumergroup="{d.prefix}worker"'.encode() in k for k in aggregated)

    d.kill("worker")

    def stale() -> dict[str, Any] | None:
        code, out = run_status(env)
        checks = {c["check"]: c for c in out["checks"]}
        if code == 1 and checks["processes"]["status"] == "FAIL":
            return checks
        return None

    checks = wait_for(stale, 60, "monitoring status: the killed worker stale, exit 1")
    assert str(first.pid) in checks["processes"]["detail"]

    second = d.start("worker", "worker")
    wait_for(is_ready, 120, "the restarted worker ready after restoring its state")

    def replaced() -> dict[str, Any] | None:
        code, out = run_status(env)
        by_pid = {p["pid"]: p for p in out["processes"]}
        if code == 0 and second.pid in by_pid and by_pid[first.pid]["replaced"]:
            return out
        return None

    wait_for(replaced, 90, "monitoring status: the old worker replaced by the new one, exit 0")
    assert os.environ.get("MONITORING_HEALTH__STALE_AFTER") is None  # the runner's env only


def test_evaluator_and_notifier_ready_and_in_the_status(
    pipeline_factory: Callable[..., LocalDeployment],
) -> None:
    rules = Path(__file__).resolve().parents[2] / "infra" / "rules" / "health.rules.yml"
    eval_port, api_port = free_port(), free_port()
    d = pipeline_factory(
        health__heartbeat_interval="1s",
        alerting__rules=f'["{rules}"]',
        alerting__metrics_port=str(eval_port),
        notifier__api_port=str(api_port),
    )
    env = {k: v for k, v in d.env.items() if k.startswith("MONITORING_")}
    d.start("alerting", "alerting")
    d.start("notifier", "notifier")
    for name, port in (("alerting", eval_port), ("notifier", api_port)):

        def ready(port: int = port) -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 90, f"the {name} ready (log: {d.dir / (name + '.log')})")

    def both() -> dict[str, Any] | None:
        code, out = run_status(env)
        procs = {p["kind"]: p for p in out["processes"]}
        if {"evaluator", "notifier"} <= procs.keys() and all(p["ready"] for p in procs.values()):
            return {"code": code, "procs": procs, "checks": {c["check"]: c for c in out["checks"]}}
        return None

    got = wait_for(both, 60, "monitoring status: the evaluator and the notifier ready")
    assert got["code"] == 0  # WARN at most: no window end evaluated yet
    assert got["checks"]["notifier"]["status"] == "OK"
    assert got["procs"]["notifier"]["figures"]["failing_receivers"] == []
    assert "rules" in got["procs"]["evaluator"]["figures"]
