"""The lease's freshness bound, the fenced outputs' error handling and the dispatcher's
veto, with fakes standing in for librdkafka (the real broker: tests/integration/
test_lease.py and test_ha_failover.py)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError
from fixtures.lease import FakeLeaseConsumer, FakeTxnProducer, lease, outputs
from fixtures.notify import cpu_notification

from monitoring.alerts.receivers import parse_receivers
from monitoring.runtime.lease import Fenced
from monitoring.sinks.notifiers.dispatcher import DeliveryRecord, Dispatcher, Vetoed


def test_fresh_only_within_session_minus_two_heartbeats() -> None:
    ls = lease(FakeLeaseConsumer())
    assert not ls.fresh()  # never confirmed
    ls.confirmed(time.monotonic() - 3.9)
    assert ls.fresh()
    ls._confirmed_at = time.monotonic() - 4.1  # 6 s session - 2 x 1 s heartbeat
    assert not ls.fresh()
    ls.confirmed(time.monotonic())
    ls.held = False
    assert not ls.fresh()  # revoked: never fresh


def test_ensure_fresh_confirms_once_and_vetoes_an_expelled_member() -> None:
    good = FakeLeaseConsumer()
    ls = lease(good)
    asyncio.run(ls.ensure_fresh())
    asyncio.run(ls.ensure_fresh())
    assert good.commits == 1  # the second was fresh
    expelled = lease(FakeLeaseConsumer(KafkaError(KafkaError.UNKNOWN_MEMBER_ID)))
    with pytest.raises(Fenced):
        asyncio.run(expelled.ensure_fresh())


def test_a_transaction_opens_at_the_first_record_and_commits_with_the_lease_offset() -> None:
    p = FakeTxnProducer()
    out = outputs(p)
    assert asyncio.run(out.flush())  # nothing open: nothing to commit
    asyncio.run(out.send("t", b"k", b"v"))
    asyncio.run(out.send("t", b"k", b"w"))
    assert out.open
    assert asyncio.run(out.flush())
    assert p.calls == ["begin", "produce", "produce", "offsets", "commit"]
    assert not out.open and out.lease.fresh()  # a commit confirms the lease


def test_a_fenced_commit_aborts_and_raises() -> None:
    p = FakeTxnProducer(KafkaError(KafkaError.ILLEGAL_GENERATION, txn_requires_abort=True))
    out = outputs(p)
    asyncio.run(out.send("t", b"k", b"v"))
    with pytest.raises(Fenced):
        asyncio.run(out.flush())
    assert p.calls[-1] == "abort" and not out.open


def test_a_retriable_commit_error_is_retried_later() -> None:
    p = FakeTxnProducer(KafkaError(KafkaError._TIMED_OUT, retriable=True))
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
    p = FakeTxnProducer()
    out = outputs(p)

    def commit(_timeout: float) -> None:
        p.calls.append("commit")
        out.produce_now("t", b"k", b"during")  # a delivery callback while committing

    p.commit_transaction = commit  # type: ignore[method-assign]
    asyncio.run(out.send("t", b"k", b"v"))
    assert asyncio.run(out.flush())
    assert p.calls == ["begin", "produce", "offsets", "commit", "begin", "produce"]
    assert out.open
