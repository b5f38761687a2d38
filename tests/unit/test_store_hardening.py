"""The store's failure paths with fakes (no ClickHouse, no Kafka): transient errors
retried, other insert errors split out, rebalanced partitions paused during an outage,
the buffer bounded, health not ok while a flush fails or hangs, startup retried,
credentials redacted, dead letters cut to fit and never raising."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from types import SimpleNamespace
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError
from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError, KafkaException
from fixtures.store_records import AGGREGATE, bad
from prometheus_client import CollectorRegistry

from monitoring.config import KafkaSettings, Settings
from monitoring.runtime.outputs import (
    MAX_HEADER_BYTES,
    DeadLetters,
    Outputs,
    dead_letter_headers,
    fit_dead_letter,
)
from monitoring.sinks.clickhouse import store as store_module
from monitoring.sinks.clickhouse.rows import AGGREGATE_COLUMNS
from monitoring.sinks.clickhouse.store import (
    StartupHealth,
    Store,
    open_with_retry,
    redact,
)
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer, transient, writer_dsn
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
COUNT = AGGREGATE_COLUMNS.index("count")


class Msg:
    """A consumed message with its coordinates."""

    def __init__(self, value: bytes, partition: int = 0, offset: int = 0, topic: str = "t"):
        self._value, self._partition, self._offset, self._topic = value, partition, offset, topic

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"key"

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1_000


def agg(i: int, count: int = 3, **kw: Any) -> Msg:
    return Msg(CODEC.encode(AGGREGATE, bad(AGGREGATE, "count", count, i)), **kw)


class Client:
    """Refuses (DataError) a batch holding a negative count; ``down`` raises a
    connection error; ``block`` makes inserts wait on it."""

    def __init__(self) -> None:
        self.rows: list[Any] = []
        self.inserts = 0
        self.down = False
        self.block: threading.Event | None = None
        self.entered = threading.Event()

    def insert(self, table: str, data: list[list[Any]], **_: Any) -> None:
        self.inserts += 1
        self.entered.set()
        if self.block is not None:
            self.block.wait(30)
        if self.down:
            raise OperationalError("Error HTTPConnectionPool: Connection refused")
        if table == "aggregates" and min(data[COUNT]) < 0:
            raise DataError("Unable to create native array for column `count`: error")
        self.rows += list(zip(*data, strict=True))


class Consumer:
    def __init__(self) -> None:
        self.commits = 0
        self.assigned: list[Any] = []
        self.paused: set[Any] = set()
        self.seeks: list[Any] = []
        self.committed: list[Any] = []

    def commit(self, offsets: list[Any] | None = None, asynchronous: bool = True) -> None:
        self.commits += 1
        self.committed = sorted((tp.topic, tp.partition, tp.offset) for tp in offsets or [])

    def assignment(self) -> list[Any]:
        return list(self.assigned)

    def assign(self, parts: list[Any]) -> None:
        self.assigned = list(parts)

    def pause(self, parts: list[Any]) -> None:
        self.paused |= set(parts)

    def resume(self, parts: list[Any]) -> None:
        self.paused -= set(parts)

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class Letters:
    def __init__(self) -> None:
        self.letters: list[tuple[Any, ...]] = []
        self.sent = 0
        self.flushed = 0

    def send(self, key: Any, value: Any, reason: str, detail: str, source: Any) -> bool:
        self.letters.append((key, value, reason, detail, source))
        self.sent += 1
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        self.flushed += 1
        return True


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make(batch_size: int = 1000) -> tuple[Store, Client, Consumer, Letters, Clock, Any]:
    settings = Settings.load(None)
    storage = settings.storage.model_copy(update={"batch_size": batch_size})
    settings = settings.model_copy(update={"storage": storage})
    client, consumer, letters, clock = Client(), Consumer(), Letters(), Clock()
    registry = CollectorRegistry()
    store = Store(settings, Writer(client, StoreMetrics(registry)), consumer, CODEC, clock,
                  dead_letters=letters)  # type: ignore[arg-type]  # fmt: skip
    return store, client, consumer, letters, clock, registry


# -- insert errors: transient ones retried, the others split out -----------------------
def test_errors_are_transient_or_about_rows() -> None:
    assert transient(OperationalError("connection refused"))
    assert transient(TimeoutError()) and transient(ConnectionResetError())
    assert transient(DatabaseError("received ClickHouse error code 252\n Code: 252. Too many"))
    assert not transient(DataError("Unable to create native array for column `count`"))
    assert not transient(DatabaseError("Code: 321. DB::Exception: out of range"))
    assert not transient(OverflowError()) and not transient(ValueError())


def test_a_refused_row_is_split_out_and_its_message_dead_lettered() -> None:
    store, client, consumer, letters, _clock, _registry = make()
    msgs = [agg(i, count=-1 if i in (3, 9) else 3, offset=i) for i in range(16)]
    for m in msgs:
        store.writer.source = m  # as ``handle`` does; rows bypass the decode checks
        store.positions.advance(m)
        store.writer.add_aggregate(CODEC.decode(m.value()).record, 1)
    store.uncommitted = len(msgs)
    store.flush_and_commit()
    assert len(client.rows) == 14 and consumer.commits == 1 and store.writer.pending == 0
    assert [(lt[1], lt[2]) for lt in letters.letters] == [
        (msgs[3].value(), "insert-rejected"),
        (msgs[9].value(), "insert-rejected"),
    ]
    assert "count" in letters.letters[0][3] and letters.letters[0][4] == ("t", 0, 3)
    assert letters.flushed == 1  # before the commit
    # 1 whole + halves down to the two rows: far fewer inserts than rows
    assert client.inserts <= 1 + 2 * 2 * 4


def test_a_transient_error_keeps_the_batch_whole_and_retries() -> None:
    store, client, consumer, letters, clock, _ = make()
    store.handle(agg(1))
    client.down = True
    clock.t = 5.0
    assert not store.maybe_flush()
    assert client.inserts == 1 and store.writer.pending == 1 and not letters.letters
    assert consumer.commits == 0 and store.health()["status"] == "degraded"
    client.down = False
    clock.t = 6.0
    assert store.maybe_flush() and consumer.commits == 1 and len(client.rows) == 1
    assert store.health()["status"] == "ok"


def test_out_of_range_is_dead_lettered_on_decode_and_counted() -> None:
    store, _client, _consumer, letters, _clock, registry = make()
    store.handle(agg(1, count=-1))
    store.handle(agg(2))
    assert store.writer.pending == 1
    [(key, _value, reason, detail, _source)] = letters.letters
    assert (key, reason) == (b"key", "out-of-range") and "count = -1" in detail
    assert (
        registry.get_sample_value(
            "monitoring_store_invalid_events_total", {"reason": "out-of-range"}
        )
        == 1
    )


# -- outages: rebalances, the buffer, health -------------------------------------------
def test_partitions_assigned_during_an_outage_are_paused() -> None:
    store, client, consumer, _letters, clock, _ = make()
    store.on_assign(consumer, ["p0"])
    assert consumer.assigned == ["p0"] and not consumer.paused
    store.handle(agg(1))
    client.down = True
    clock.t = 5.0
    store.maybe_flush()
    assert consumer.paused == {"p0"}
    store.on_assign(consumer, ["p0", "p1"])  # a rebalance mid-outage
    assert consumer.paused == {"p0", "p1"}
    client.down = False
    clock.t = 10.0
    assert store.maybe_flush() and not consumer.paused


def test_the_buffer_is_bounded_the_rest_held() -> None:
    store, client, consumer, _letters, clock, _ = make(batch_size=5)  # at most 10 rows
    client.down = True
    msgs = [agg(i, partition=i % 2, offset=100 + i) for i in range(30)]
    assert store.handle_many(msgs) == 10
    assert store.writer.pending == 10 and store.paused and store.held == msgs[10:]
    assert store.handle_many([]) == 0  # paused and full: nothing more is taken
    assert store.held == msgs[10:] and consumer.seeks == []
    client.down = False
    clock.t = 5.0
    assert store.maybe_flush() and not store.paused and store.writer.pending == 0
    # the offsets after the messages handled, not the consumer's position
    assert consumer.committed == [("t", 0, 109), ("t", 1, 110)]
    assert store.handle_many([]) == 10 and store.held == msgs[20:]  # in order


def test_health_is_not_ok_while_a_flush_hangs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "FLUSH_STUCK_S", 0.0)
    store, client, _consumer, _letters, _clock, _ = make()
    store.handle(agg(1))
    client.block = threading.Event()
    t = threading.Thread(target=store.flush_and_commit)
    t.start()
    try:
        assert client.entered.wait(10)
        deadline = time.monotonic() + 10
        while store.health()["flush_running_s"] <= 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # wall time has to pass, however little
        assert store.health()["status"] == "stuck"
    finally:
        client.block.set()
        t.join(10)
    assert store.health()["status"] == "ok" and store.health()["flush_running_s"] == 0


def test_health_reports_failing_flushes_and_their_error_redacted() -> None:
    store, client, _consumer, _letters, clock, _ = make()
    store.handle(agg(1))

    def refuse(*_: Any, **__: Any) -> None:
        raise OperationalError("Error http://writer:hunter2@ch:8123 refused")

    client.insert = refuse  # type: ignore[method-assign]
    clock.t = 5.0
    store.maybe_flush()
    health = store.health()
    assert health["status"] == "degraded" and health["failing_for_s"] >= 0
    assert "hunter2" not in json.dumps(health) and "writer:***@ch" in health["last_error"]


# -- startup ---------------------------------------------------------------------------
def test_startup_waits_for_clickhouse_and_logs_each_retry() -> None:
    calls = []

    def open_client() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("Connection refused (http://u:pw@ch:8123)")
        return "client"

    state: dict[str, Any] = {}
    stop = threading.Event()
    got = open_with_retry(open_client, stop, "http://u:pw@ch:8123", state, max_backoff_s=0.01)
    assert got == "client" and len(calls) == 3
    assert state["status"] == "ok" and state["attempts"] == 3
    stop.set()  # stopped while waiting: None, no exception
    calls.clear()
    assert open_with_retry(lambda: open_client() and "x", stop, "d", state) is None
    assert state["status"] == "starting" and "pw" not in state["last_error"]
    with pytest.raises(ValueError):  # not a transient error: raised at once
        open_with_retry(lambda: int("x"), threading.Event(), "d")


@pytest.mark.parametrize("clickhouse", ["unavailable", "connected"])
def test_startup_health_answers_503_with_the_state(clickhouse: str) -> None:
    # connected too: the query endpoint is not serving yet (a client told ok would query
    # the port in the moment it changes hands, and find it closed)
    state = {"status": "ok" if clickhouse == "connected" else "starting", "clickhouse": clickhouse}
    server = StartupHealth("127.0.0.1", 0, state)
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz", timeout=5)
        body = json.load(e.value)
        assert e.value.code == 503 and body["clickhouse"] == clickhouse
        assert body["status"] == "starting"
    finally:
        server.stop()


def test_dsn_credentials_are_redacted_and_the_writer_times_out() -> None:
    assert redact("https://w:p%40ss@ch:8443/db") == "https://w:***@ch:8443/db"
    assert redact("http://ch:8123/?user=w&password=s3") == "http://ch:8123/?user=w&password=***"
    assert redact("chdb:///.data/chdb") == "chdb:///.data/chdb"
    assert writer_dsn("https://ch:8443/db?secure=1").endswith("&send_receive_timeout=30")
    assert writer_dsn("http://ch/?send_receive_timeout=5") == "http://ch/?send_receive_timeout=5"


# -- dead letters: cut to fit, never raising -------------------------------------------
def test_a_dead_letter_is_cut_to_fit_the_limit() -> None:
    value = bytes(range(256)) * 300
    headers = dead_letter_headers("r", "e" * 10_000, "t", 0, 1, "s", list(range(5000)))
    assert all(len(v or b"") <= MAX_HEADER_BYTES for _, v in headers)
    assert dict(headers)["x-rejected-samples"].endswith(b",...")
    key, out, hs = fit_dead_letter(b"k", value, headers, 65_536)
    h = dict(hs)
    size = len(out or b"") + len(key or b"") + sum(len(n) + len(v or b"") for n, v in hs)
    assert size < 65_536 - 1024 and value.startswith(out or b"x")
    assert h["x-truncated"] == str(len(value)).encode()
    assert h["x-payload-sha256"] == hashlib.sha256(value).hexdigest().encode()
    small = fit_dead_letter(b"k", b"abc", headers, 65_536)
    assert small[1] == b"abc" and "x-truncated" not in dict(small[2])
    key, out, hs = fit_dead_letter(b"K" * 70_000, b"v", [], 65_536)  # a key too large
    assert len(key or b"") < 65_536 - 1024 and dict(hs)["x-key-truncated"] == b"70000"


class RefusingProducer:
    def produce(self, *args: Any, **kwargs: Any) -> None:
        raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        raise KafkaException(KafkaError(KafkaError._TRANSPORT))


def test_dead_letter_failures_are_counted_never_raised() -> None:
    out = Outputs(KafkaSettings())
    out.producer = RefusingProducer()  # type: ignore[assignment]
    msg = SimpleNamespace(topic="t", partition=0, offset=1, key=b"k", value=b"v")
    import asyncio

    asyncio.run(out.dead_letter("dl", msg, "bad", "detail", "stage"))  # type: ignore[arg-type]
    assert out.dead_letters_failed == 1 and out.failed == 0
    dl = DeadLetters(KafkaSettings(), "dl", "store", producer=RefusingProducer())
    assert not dl.send(b"k", b"v", "r", "d", ("t", 0, 1)) and dl.failed == 1
    assert not dl.flush(0.1)
    store, _client, _consumer, _letters, _clock, registry = make()
    store.dead_letters = dl
    store.handle(agg(1, count=-1))  # the failure is counted, the store goes on
    assert registry.get_sample_value("monitoring_store_dead_letter_failures_total") == 1


def test_the_writer_client_gives_up_on_a_server_that_does_not_answer() -> None:
    """clickhouse-connect takes send_receive_timeout from the DSN: a server that
    accepts and never answers fails the call after it (not 300 s), as a transient
    error the store retries."""
    import socket

    from monitoring.sinks.clickhouse.connection import connect

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])  # and never answer
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    port = server.getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(OperationalError, match="timed out") as e:
            connect(writer_dsn(f"http://u:pw@127.0.0.1:{port}/", timeout_s=1))
        assert transient(e.value) and time.monotonic() - started < 30
    finally:
        server.close()
        for s in accepted:
            s.close()
