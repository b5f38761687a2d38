"""Rows ClickHouse cannot hold never stop the store (real chDB; the end-to-end test
also the real broker): every int field out of its column's range is dead-lettered on
decode, a row a table still refuses is split out of its batch and dead-lettered, and
the good rows around them are stored and committed."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from fixtures.store import StoreMessage
from fixtures.store_records import (
    AGGREGATE,
    OUT_OF_RANGE,
    STORED_LOG,
    TABLE,
    bad,
    good,
)
from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.runtime.topics import AGGREGATES, DEAD_LETTER, LOG_STORED, topic_name
from monitoring.sinks.clickhouse import store as store_module
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()


class Letters:
    """The store's dead-letter sink, kept in memory."""

    def __init__(self) -> None:
        self.letters: list[dict[str, Any]] = []
        self.sent = 0

    def send(self, key: Any, value: Any, reason: str, detail: str, source: Any) -> bool:
        self.letters.append({"value": value, "reason": reason, "detail": detail})
        self.sent += 1
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        return True

    def close(self) -> None:
        pass


class Commits:
    """A consumer that only counts commits."""

    def __init__(self) -> None:
        self.commits = 0

    def commit(self, asynchronous: bool = True) -> None:
        self.commits += 1


def make_store(settings: Settings, client: Any) -> tuple[Store, Letters, Commits, Any]:
    registry = CollectorRegistry()
    letters, consumer = Letters(), Commits()
    store = Store(settings, Writer(client, StoreMetrics(registry)), consumer, CODEC,
                  dead_letters=letters)  # type: ignore[arg-type]  # fmt: skip
    return store, letters, consumer, registry


def msg(name: str, record: dict[str, Any]) -> StoreMessage:
    return StoreMessage(CODEC.encode(name, record))


IDS = [f"{n.split('.')[1]}.{f}={v}" for n, f, v in OUT_OF_RANGE]


def count(client: Any, table: str) -> int:
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])


@pytest.mark.parametrize(("name", "field", "value"), OUT_OF_RANGE, ids=IDS)
def test_a_field_out_of_its_column_range_is_dead_lettered_on_decode(
    chdb_client: Any, chdb_settings: Settings, name: str, field: str, value: Any
) -> None:
    store, letters, consumer, registry = make_store(chdb_settings, chdb_client)
    bad_msg = msg(name, bad(name, field, value, 2))
    for m in (msg(name, good(name, 1)), bad_msg, msg(name, good(name, 3))):
        store.handle(m)
    store.flush_and_commit()  # raised on every flush before: the store was stuck
    store.handle(msg(name, good(name, 4)))  # ... and goes on
    store.flush_and_commit()
    rows_per_record = 2 if name.endswith("Batch") else 1
    assert count(chdb_client, TABLE[name]) == 3 * rows_per_record
    assert consumer.commits == 2
    [letter] = letters.letters
    assert letter["reason"] == "out-of-range" and letter["value"] == bad_msg.value()
    assert field in letter["detail"], letter["detail"]
    assert (
        registry.get_sample_value("monitoring_store_dead_letters_total", {"reason": "out-of-range"})
        == 1
    )
    # every row stored reads back (a DateTime64 out of range would break reads)
    assert len(chdb_client.query(f"SELECT * FROM {TABLE[name]}").result_rows) == count(
        chdb_client, TABLE[name]
    )


def test_rows_a_table_refuses_are_split_out_and_dead_lettered(
    chdb_client: Any, chdb_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The safety net behind the decode checks: with them off, the insert fails; the
    batch is bisected, the good rows stored, the refused rows' messages dead-lettered
    (reason insert-rejected, the column in the error), and the offsets committed."""
    monkeypatch.setattr(store_module, "check_ranges", lambda name, record: None)
    store, letters, consumer, registry = make_store(chdb_settings, chdb_client)
    bad_values = {5: ("count", -1), 11: ("window_ms", 2**32), 12: ("count", -7)}
    sent = {}
    for i in range(20):
        field, value = bad_values.get(i, ("count", 3))
        m = sent[i] = msg(AGGREGATE, bad(AGGREGATE, field, value, i))
        store.handle(m)
    store.handle(msg(STORED_LOG, bad(STORED_LOG, "severity", 300, 1)))
    store.handle(msg(STORED_LOG, good(STORED_LOG, 2)))
    store.flush_and_commit()
    assert count(chdb_client, "aggregates") == 17 and count(chdb_client, "logs") == 1
    assert consumer.commits == 1 and store.writer.pending == 0
    assert sorted(lt["value"] for lt in letters.letters[:3]) == sorted(
        sent[i].value() for i in bad_values
    )
    assert {lt["reason"] for lt in letters.letters} == {"insert-rejected"}
    assert "aggregates" in letters.letters[0]["detail"] and "count" in str(letters.letters)
    assert "logs" in letters.letters[3]["detail"] and len(letters.letters) == 4
    assert (
        registry.get_sample_value("monitoring_store_rows_rejected_total", {"table": "aggregates"})
        == 3
    )


# -- end to end: the real broker -------------------------------------------------------
def read_dead_letters(settings: Settings, n: int, timeout: float = 60) -> list[Any]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                  "group.id": f"dl-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest",
                  "fetch.max.bytes": 8 << 20})  # fmt: skip
    c.subscribe([topic_name(settings.kafka, DEAD_LETTER)])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(got) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                got.append(m)
    finally:
        c.close()
    return got


@pytest.mark.integration
@pytest.mark.parametrize("decode_checks", [True, False], ids=["on-decode", "on-insert"])
def test_store_dead_letters_bad_rows_and_goes_on(
    settings_factory: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    decode_checks: bool,
) -> None:
    """Aggregates and logs with fields their columns cannot hold, among good ones, on
    the real broker: the good rows are stored, the bad messages land in the
    dead-letter topic with the reason (one near the message limit, cut to fit), and
    the store goes on storing what comes after."""
    limit = 64 * 1024
    base = settings_factory(max_message_bytes=limit)
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    settings = base.model_copy(update={"storage": storage})
    if not decode_checks:
        monkeypatch.setattr(store_module, "check_ranges", lambda name, record: None)
    k = settings.kafka
    aggregates, logs = topic_name(k, AGGREGATES), topic_name(k, LOG_STORED)
    p = Producer({"bootstrap.servers": k.bootstrap_servers, "message.max.bytes": 1 << 20})
    for i in range(10):
        p.produce(aggregates, msg(AGGREGATE, good(AGGREGATE, i)).value(), key=f"k{i}")
    p.produce(aggregates, msg(AGGREGATE, bad(AGGREGATE, "count", -1, 50)).value(), key="bad")
    big = bad(AGGREGATE, "window_ms", 2**32, 51)
    big["labels"] = {"pad": "x" * (limit - 1000)}  # encoded: just under the limit
    big_value = CODEC.encode(AGGREGATE, big)
    assert limit - 1000 < len(big_value) < limit - 200
    p.produce(aggregates, big_value, key="big")
    p.produce(logs, msg(STORED_LOG, bad(STORED_LOG, "severity", 256, 1)).value(), key="svc")
    p.produce(logs, msg(STORED_LOG, good(STORED_LOG, 2)).value(), key="svc")
    assert p.flush(30) == 0

    client = connect(settings.storage.dsn)
    migrate(client, settings.storage)
    store = Store(settings, Writer(client, StoreMetrics(CollectorRegistry())), codec=CODEC,
                  group_id=f"store-{uuid.uuid4().hex[:8]}")  # fmt: skip
    stop = threading.Event()
    thread = threading.Thread(target=store.run, args=(stop,))
    thread.start()
    try:
        letters = read_dead_letters(settings, 3)
        assert len(letters) == 3
        headers = [dict(m.headers()) for m in letters]
        reason = b"out-of-range" if decode_checks else b"insert-rejected"
        assert {h["x-reason"] for h in headers} == {reason}
        by_key = {m.key(): (m, h) for m, h in zip(letters, headers, strict=True)}
        m, h = by_key[b"big"]
        assert h["x-truncated"] == str(len(big_value)).encode()
        assert h["x-payload-sha256"] == hashlib.sha256(big_value).hexdigest().encode()
        assert big_value.startswith(m.value()) and len(m.value()) < limit - 1024
        assert h["x-source-topic"] == aggregates.encode() and h["x-stage"] == b"store"
        assert b"window_ms" in h["x-error"] or not decode_checks
        assert by_key[b"bad"][0].value() == msg(AGGREGATE, bad(AGGREGATE, "count", -1, 50)).value()
        # the store goes on: what comes after the bad rows is stored too
        p.produce(aggregates, msg(AGGREGATE, good(AGGREGATE, 99)).value(), key="after")
        p.flush(30)
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and store.writer.metrics.rows.labels("aggregates")._value.get() < 11
        ):
            time.sleep(0.2)
        assert store.health()["status"] == "ok"
    finally:
        stop.set()
        thread.join(60)
    try:
        assert not thread.is_alive()
        assert count(client, "aggregates FINAL") == 11 and count(client, "logs FINAL") == 1
    finally:
        client.close()
