"""The consume/commit building blocks of the evaluator, the notifier and the store
(``runtime/consume.py``), with fakes standing in for librdkafka. The processes on a
real broker: tests/integration/test_alerting_*, test_notif*, test_store_*."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from confluent_kafka import OFFSET_END, KafkaError, KafkaException, TopicPartition
from fixtures.lease import FakeTxnProducer, outputs
from pydantic import SecretStr

from monitoring.config import KafkaSecurity, KafkaSettings
from monitoring.runtime import consume
from monitoring.runtime.kafka_client import KafkaAccessDenied
from monitoring.runtime.lease import Fenced, FencedOutputs
from monitoring.runtime.outputs import DeadLetters, Outputs


class Msg:
    def __init__(
        self,
        topic: str = "t",
        partition: int = 0,
        offset: int = 0,
        value: bytes | None = b"v",
        key: bytes | None = b"k",
        error: KafkaError | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._key, self._error = value, key, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def error(self) -> KafkaError | None:
        return self._error


class FakeConsumer:
    def __init__(self, batches: list[list[Msg]] | None = None) -> None:
        self.batches = batches or []
        self.commits: list[Any] = []
        self.commit_error: KafkaError | None = None
        self.closed = False
        self.watermark_calls: list[tuple[TopicPartition, bool]] = []

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Msg]:
        return self.batches.pop(0)[:num_messages] if self.batches else []

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> None:
        assert asynchronous is False  # a commit after stored rows is synchronous
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)
        self.commits.append(
            None if offsets is None else [(t.topic, t.partition, t.offset) for t in offsets]
        )

    def offsets_for_times(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        # partition 1 has no record at or after the time: -1, as librdkafka answers
        return [
            TopicPartition(tp.topic, tp.partition, -1 if tp.partition == 1 else 40 + tp.partition)
            for tp in tps
        ]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float, cached: bool
    ) -> tuple[int, int]:
        self.watermark_calls.append((tp, cached))
        return 0, 100 + tp.partition

    def close(self) -> None:
        self.closed = True


def test_new_consumer_never_auto_commits_and_stops_on_a_refused_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[dict[str, Any]] = []
    monkeypatch.setattr(consume, "Consumer", lambda conf: made.append(conf) or "c")
    assert consume.new_consumer(KafkaSettings(), "g", **{"fetch.wait.max.ms": 20}) == "c"
    conf = made[0]
    assert conf["group.id"] == "g" and conf["enable.auto.commit"] is False
    assert conf["fetch.wait.max.ms"] == 20
    with pytest.raises(KafkaAccessDenied, match="refused the credentials"):
        conf["error_cb"](KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
    conf["error_cb"](KafkaError(KafkaError._TRANSPORT))  # a broker away: retried, not fatal


def test_fetch_keeps_records_in_order_and_drops_error_events() -> None:
    records = [Msg(offset=1), Msg(offset=2)]
    eof = Msg(offset=3, error=KafkaError(KafkaError._PARTITION_EOF))
    other = Msg(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    c = FakeConsumer([[records[0], eof, other, records[1]]])
    assert consume.fetch(c, 10, 0.01) == records
    assert consume.fetch(c, 10, 0.01) == []


def test_offsets_at_starts_a_partition_without_records_since_at_its_end() -> None:
    start = consume.offsets_at(FakeConsumer(), "t", [0, 1, 2], 1_000)
    assert [(tp.topic, tp.partition, tp.offset) for tp in start] == [
        ("t", 0, 40),
        ("t", 1, OFFSET_END),
        ("t", 2, 42),
    ]


def test_end_offsets_asks_the_broker_not_the_cache() -> None:
    c = FakeConsumer()
    assert consume.end_offsets(c, "t", [0, 2]) == {0: 100, 2: 102}
    assert [cached for _, cached in c.watermark_calls] == [False, False]


def test_positions_commit_the_offset_after_each_handled_record_and_only_those() -> None:
    c = FakeConsumer()
    pos = consume.Positions()
    for m in (Msg("a", 0, 5), Msg("a", 0, 6), Msg("a", 1, 9), Msg("b", 0, 0)):
        pos.advance(m)
    pos.drop([("b", 0)])  # revoked: the next owner commits it
    pos.commit(c)
    assert c.commits == [[("a", 0, 7), ("a", 1, 10)]]
    assert pos.next == {}


def test_positions_without_offsets_commit_the_consumers_own_and_nothing_is_no_error() -> None:
    c = FakeConsumer()
    pos = consume.Positions()
    pos.advance(Bare())  # a record without a position (a test fake)
    pos.commit(c)
    assert c.commits == [None]
    c.commit_error = KafkaError(KafkaError._NO_OFFSET)
    pos.advance(Bare())
    pos.commit(c)  # nothing consumed yet: not an error
    c.commit_error = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    pos.advance(Msg(offset=1))
    with pytest.raises(KafkaException):
        pos.commit(c)
    assert pos.next == {("t", 0): 2}  # kept: committed by the next successful commit


class FakeProducer:
    def __init__(self, full: bool = False) -> None:
        self.full = full
        self.sent: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    def produce(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        if self.full:
            raise BufferError("full")
        self.sent.append((topic, key, value, dict(headers)))

    def poll(self, _timeout: float) -> int:
        return 0


def test_dead_letter_sends_the_original_with_reason_and_source() -> None:
    producer = FakeProducer()
    dl = DeadLetters(KafkaSettings(), "dlq", "notifier", producer=producer)
    assert consume.dead_letter(
        dl, Msg("alerts", 3, 17, b"\x00bad", b"key"), "unexpected-record", "why"
    )
    topic, key, value, headers = producer.sent[0]
    assert (topic, key, value) == ("dlq", b"key", b"\x00bad")
    assert headers["x-reason"] == b"unexpected-record" and headers["x-error"] == b"why"
    assert (
        headers["x-source-topic"],
        headers["x-source-partition"],
        headers["x-source-offset"],
    ) == (
        b"alerts",
        b"3",
        b"17",
    )
    assert headers["x-stage"] == b"notifier"


def test_dead_letter_refused_is_counted_not_raised() -> None:
    dl = DeadLetters(KafkaSettings(), "dlq", "store", producer=FakeProducer(full=True))
    assert not consume.dead_letter(dl, Msg(), "r", "d")
    assert dl.failed == 1


class FakeLease:
    def __init__(self, held: bool) -> None:
        self.held = held

    def poll(self) -> bool:
        return self.held


def test_check_lease_ends_a_term_when_the_lease_is_lost_or_a_write_was_vetoed() -> None:
    consume.check_lease(None, "alerting")  # no HA: never
    held: Any = FakeLease(True)
    consume.check_lease(held, "alerting")
    with pytest.raises(Fenced, match="notifier: the lease was lost"):
        consume.check_lease(FakeLease(False), "notifier")  # type: ignore[arg-type]
    with pytest.raises(Fenced, match="vetoed: stale"):
        consume.check_lease(held, "notifier", vetoed="vetoed: stale")


def fenced_outputs() -> tuple[FencedOutputs, FakeTxnProducer]:
    producer = FakeTxnProducer()
    return outputs(producer), producer


def test_cadence_checkpoints_when_dirty_and_due_and_commits_the_transaction_between() -> None:
    now = [0.0]
    cadence = consume.Cadence(10.0, clock=lambda: now[0])
    out, producer = fenced_outputs()
    checkpoints: list[float] = []

    async def checkpoint() -> None:
        checkpoints.append(now[0])

    async def go() -> None:
        assert not await cadence.step(True, out, checkpoint)  # not due yet
        await out.send("alerts", b"k", b"v")
        now[0] = 11.0
        assert not await cadence.step(False, out, checkpoint)  # due, nothing new
        assert producer.calls[-1] == "commit" and not out.open  # the alert is visible
        assert await cadence.step(True, out, checkpoint)
        now[0] = 15.0
        assert not await cadence.step(True, out, checkpoint)  # 4 s after the last

    asyncio.run(go())
    assert checkpoints == [11.0]


def test_cadence_without_ha_only_checkpoints() -> None:
    out: Any = object.__new__(Outputs)  # a plain producer: no transaction to commit
    now = [100.0]
    cadence = consume.Cadence(1.0, clock=lambda: now[0])
    done: list[bool] = []

    async def checkpoint() -> None:
        done.append(True)

    now[0] = 101.0
    assert asyncio.run(cadence.step(True, out, checkpoint)) and done == [True]


def test_end_term_closes_the_consumer_and_aborts_what_the_term_left_open() -> None:
    out, producer = fenced_outputs()
    asyncio.run(out.send("alerts", b"k", b"v"))
    c = FakeConsumer()
    consume.end_term(c, out)
    assert c.closed and producer.calls[-1] == "abort" and not out.open
    plain = FakeConsumer()
    consume.end_term(plain, object.__new__(Outputs))
    assert plain.closed


class Bare:
    """A record as some test fakes give one: a topic and a value, no position."""

    def topic(self) -> str:
        return "t"

    def value(self) -> bytes:
        return b"v"


def test_a_record_without_a_position_is_not_committed_and_dead_letters_at_zero() -> None:
    pos = consume.Positions()
    pos.advance(Bare())
    assert pos.next == {} and consume.where(Bare()) == ("t", None, None)
    producer = FakeProducer()
    dl = DeadLetters(KafkaSettings(), "dlq", "store", producer=producer)
    assert consume.dead_letter(dl, Bare(), "r", "d")
    _, key, _, headers = producer.sent[0]
    assert key is None and headers["x-source-partition"] == b"0" == headers["x-source-offset"]


def test_positions_of_partitions_given_up_commit_nothing() -> None:
    """The store's revoke drops the revoked partitions' positions (after a flush that
    may have failed); committing the consumer's own position then would commit the
    other partitions' records fetched but held, not handled: lost on a crash."""
    c = FakeConsumer()
    pos = consume.Positions()
    pos.advance(Msg("a", 0, 5))
    pos.drop([("a", 0)])
    pos.commit(c)
    assert c.commits == []


@pytest.mark.parametrize("code", [KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.FENCED_LEADER_EPOCH])
def test_offsets_at_retries_a_leader_epoch_error_of_a_restarting_broker(code: int) -> None:
    """Seen in a chaos run: offsets_for_times answered UNKNOWN_LEADER_EPOCH while the
    broker restarted, and the notifier's standby exited instead of retrying."""
    c = FakeConsumer()
    real = c.offsets_for_times
    failures = [KafkaException(KafkaError(code))]

    def flaky(tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        if failures:
            raise failures.pop()
        return real(tps, timeout)

    c.offsets_for_times = flaky  # type: ignore[method-assign]
    assert [tp.offset for tp in consume.offsets_at(c, "t", [0], 1_000)] == [40]
    assert not failures


def test_fetch_raises_naming_the_acl_an_authorizer_refused() -> None:
    k = KafkaSettings(
        bootstrap_servers="b:9093",
        security=KafkaSecurity(protocol="SASL_SSL", username="u", password=SecretStr("p")),
    )
    denied = Msg(topic="p.alerts", error=KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    c = FakeConsumer([[Msg(offset=1), denied]])
    with pytest.raises(KafkaAccessDenied) as e:
        consume.fetch(c, 10, 0.01, k)
    assert "denied user 'u' Read on topic 'p.alerts' (TOPIC_AUTHORIZATION_FAILED" in str(e.value)
    assert "monitoring broker acls" in str(e.value)
    group = Msg(error=KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED, "JoinGroup failed"))
    with pytest.raises(KafkaAccessDenied, match="denied user 'u' Read on group"):
        consume.fetch(FakeConsumer([[group]]), 10, 0.01, k)
