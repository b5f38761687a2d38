"""The lease's freshness bound, the fenced outputs' error handling and the dispatcher's
veto, with fakes standing in for librdkafka (the real broker: tests/integration/
test_lease.py and test_ha_failover.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from fixtures.notify import cpu_notification

from monitoring.alerts.receivers import parse_receivers
from monitoring.config import KafkaSettings
from monitoring.runtime.lease import Fenced, FencedOutputs, Lease
from monitoring.sinks.notifiers.dispatcher import DeliveryRecord, Dispatcher, Vetoed


class FakeConsumer:
    def __init__(self, commit_error: KafkaError | None = None) -> None:
        self.commit_error = commit_error
        self.commits = 0

    def poll(self, _timeout: float) -> None:
        return None

    def commit(self, **_: Any) -> None:
        self.commits += 1
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)

    def consumer_group_metadata(self) -> str:
        return "meta"

    def close(self) -> None:
        pass


def lease(consumer: FakeConsumer, held: bool = True) -> Lease:
    """A Lease whose consumer is a fake (no broker)."""
    obj = Lease.__new__(Lease)
    obj.duty, obj.topic, obj.group, obj.instance = "notifier", "p.leases", "p.notifier.lease", "i"
    obj.session_s, obj.heartbeat_s = 6.0, 1.0
    obj.held, obj.terms, obj.acquired_at = held, 1, 0.0
    obj._confirmed_at = float("-inf")
    obj.consumer = consumer  # type: ignore[assignment]
    return obj


def test_fresh_only_within_session_minus_two_heartbeats() -> None:
    ls = lease(FakeConsumer())
    assert not ls.fresh()  # never confirmed
    ls.confirmed(time.monotonic() - 3.9)
    assert ls.fresh()
    ls._confirmed_at = time.monotonic() - 4.1  # 6 s session - 2 x 1 s heartbeat
    assert not ls.fresh()
    ls.confirmed(time.monotonic())
    ls.held = False
    assert not ls.fresh()  # revoked: never fresh


def test_ensure_fresh_confirms_once_and_vetoes_an_expelled_member() -> None:
    good = FakeConsumer()
    ls = lease(good)
    asyncio.run(ls.ensure_fresh())
    asyncio.run(ls.ensure_fresh())
    assert good.commits == 1  # the second was fresh
    expelled = lease(FakeConsumer(KafkaError(KafkaError.UNKNOWN_MEMBER_ID)))
    with pytest.raises(Fenced):
        asyncio.run(expelled.ensure_fresh())


class FakeProducer:
    def __init__(self, commit_error: KafkaError | None = None) -> None:
        self.commit_error = commit_error
        self.calls: list[str] = []

    def begin_transaction(self) -> None:
        self.calls.append("begin")

    def produce(self, *_: Any, **__: Any) -> None:
        self.calls.append("produce")

    def send_offsets_to_transaction(self, *_: Any) -> None:
        self.calls.append("offsets")

    def commit_transaction(self, _timeout: float) -> None:
        self.calls.append("commit")
        if self.commit_error is not None:
            raise KafkaException(self.commit_error)

    def abort_transaction(self, _timeout: float) -> None:
        self.calls.append("abort")


def outputs(producer: FakeProducer) -> FencedOutputs:
    out = FencedOutputs(KafkaSettings(), lease(FakeConsumer()))
    out.producer = producer  # type: ignore[assignment]
    return out


def test_a_transaction_opens_at_the_first_record_and_commits_with_the_lease_offset() -> None:
    p = FakeProducer()
    out = outputs(p)
    assert asyncio.run(out.flush())  # nothing open: nothing to commit
    asyncio.run(out.send("t", b"k", b"v"))
    asyncio.run(out.send("t", b"k", b"w"))
    assert out.open
    assert asyncio.run(out.flush())
    assert p.calls == ["begin", "produce", "produce", "offsets", "commit"]
    assert not out.open and out.lease.fresh()  # a commit confirms the lease


def test_a_fenced_commit_aborts_and_raises() -> None:
    p = FakeProducer(KafkaError(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True))
    out = outputs(p)
    asyncio.run(out.send("t", b"k", b"v"))
    with pytest.raises(Fenced):
        asyncio.run(out.flush())
    assert p.calls[-1] == "abort" and not out.open


def test_a_retriable_commit_error_is_retried_later() -> None:
    p = FakeProducer(KafkaError(KafkaError._TIMED_OUT, retriable=True))
    out = outputs(p)
    asyncio.run(out.send("t", b"k", b"v"))
    assert asyncio.run(out.flush()) is False
    assert out.open  # still open: the next flush commits it
    p.commit_error = None
    assert asyncio.run(out.flush())


def test_a_vetoed_send_sends_nothing_and_records_nothing() -> None:
    receivers = parse_receivers(
        [{"name": "ops", "webhook_configs": [{"url": "http://127.0.0.1:9/hook"}]}]
    )
    records: list[DeliveryRecord] = []

    async def veto() -> None:
        raise Vetoed("the lease is no longer held")

    async def go() -> None:
        async with Dispatcher(receivers, on_record=records.append, before_send=veto) as d:
            sent = [False]

            async def send(_n: Any) -> int:
                sent[0] = True
                return 200

            for integ in d.integrations["ops"]:
                integ.send = send  # type: ignore[method-assign]
            with pytest.raises(Vetoed):
                await d.deliver(cpu_notification("ops"))
            assert not sent[0]

    asyncio.run(go())
    assert records == []


def test_records_produced_during_a_commit_go_into_the_next_transaction() -> None:
    p = FakeProducer()
    out = outputs(p)

    def commit(_timeout: float) -> None:
        p.calls.append("commit")
        out.produce_now("t", b"k", b"during")  # a delivery callback while committing

    p.commit_transaction = commit  # type: ignore[method-assign]
    asyncio.run(out.send("t", b"k", b"v"))
    assert asyncio.run(out.flush())
    assert p.calls == ["begin", "produce", "offsets", "commit", "begin", "produce"]
    assert out.open
