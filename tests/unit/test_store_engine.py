"""The store whose embedded engine died (chDB after a fatal signal: Code 236 for every
statement, the process alive): health ``dead``, liveness 503, ``run`` stops with
EngineDead; a ClickHouse server's 236 and any other error are retried as before."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from clickhouse_connect.driver.exceptions import DatabaseError
from confluent_kafka import TIMESTAMP_CREATE_TIME
from prometheus_client import CollectorRegistry

from monitoring.api.server import ApiServer
from monitoring.config import Settings
from monitoring.sinks.clickhouse.store import ENGINE_PROBE_S, EngineDead, Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
NOW = 1_700_000_000_000

FATAL = "Code: 236. DB::Exception: The server is shutting down due to a fatal error. (ABORTED)"


class DeadEngine:
    """A client of an engine that took a fatal signal: every statement fails so."""

    def __init__(self, message: str = FATAL) -> None:
        self.message = message
        self.commands = 0

    def insert(self, *_: Any, **__: Any) -> None:
        raise DatabaseError(self.message)

    def command(self, *_: Any, **__: Any) -> None:
        self.commands += 1
        raise DatabaseError(self.message)


class Message:
    def __init__(self, value: bytes) -> None:
        self._value = value

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def topic(self) -> str:
        return "t"

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, NOW


def sample_msg(ts: int) -> Message:
    rec = {"name": "cpu", "value": 1.0, "timestamp_ms": ts, "labels": {"host": "a"},
           "kind": "GAUGE", "unit": "", "source": ""}  # fmt: skip
    return Message(CODEC.encode("monitoring.MetricSample", rec))


class Consumer:
    def commit(self, asynchronous: bool = True) -> None:
        pass

    def assignment(self) -> list[int]:
        return [0]

    def pause(self, parts: list[int]) -> None:
        pass

    def resume(self, parts: list[int]) -> None:
        pass


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(client: Any, dsn: str = "chdb:///.data/chdb") -> tuple[Store, Clock]:
    settings = Settings.load(None)
    settings = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"dsn": dsn})}
    )
    clock = Clock()
    store = Store(
        settings, Writer(client, StoreMetrics(CollectorRegistry())), Consumer(), CODEC, clock
    )
    return store, clock


def test_a_dead_engine_on_a_flush_stops_the_store_and_fails_liveness() -> None:
    store, clock = make(DeadEngine())
    server = ApiServer(CollectorRegistry(), "127.0.0.1", 0, store.health).start()
    try:
        url = "http://{}:{}".format(*server.address)
        assert httpx.get(url + "/-/healthy").status_code == 200
        store.handle(sample_msg(NOW))
        clock.t = 2.0
        with pytest.raises(EngineDead, match="must be restarted"):
            store.maybe_flush()
        h = store.health()
        assert h["status"] == "dead" and "fatal error" in h["engine_error"]
        r = httpx.get(url + "/-/healthy")
        assert r.status_code == 503, r.text
        assert r.json() == {"status": "unhealthy", "reasons": ["status dead"]}
        assert httpx.get(url + "/healthz").status_code == 503
    finally:
        server.stop()


def test_an_idle_store_finds_the_dead_engine_by_its_probe() -> None:
    client = DeadEngine()
    store, clock = make(client)
    store.probe_engine()
    assert client.commands == 0  # not due yet
    clock.t = ENGINE_PROBE_S
    with pytest.raises(EngineDead):
        store.probe_engine()
    assert client.commands == 1 and store.health()["status"] == "dead"


def test_a_server_shutting_down_or_another_236_is_retried_not_fatal() -> None:
    # a ClickHouse server going down restarts by itself: the store waits for it
    store, clock = make(DeadEngine(), dsn="http://127.0.0.1:8123")
    store.handle(sample_msg(NOW))
    clock.t = 2.0
    assert not store.maybe_flush()
    assert store.health()["status"] == "degraded"
    clock.t = ENGINE_PROBE_S * 2
    store.probe_engine()  # no probe of a server (its own health is its own)
    # a cancelled query (236 too) in the embedded engine is not its death
    store, clock = make(DeadEngine("Code: 236. DB::Exception: Query was cancelled. (ABORTED)"))
    store.handle(sample_msg(NOW))
    clock.t = 2.0
    assert not store.maybe_flush()
    assert store.health()["status"] == "degraded"
