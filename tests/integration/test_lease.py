"""The group lease and its fenced outputs, in-process on the real broker.

* Two members of one duty: exactly one holds the lease; when it leaves, the other
  acquires it (and a third joining does not move it: cooperative-sticky).
* A new holder's ``init_transactions`` fences the former holder's producer: its open
  transaction is aborted, its next commit raises ``Fenced``, and a committed reader
  sees nothing it wrote after the new holder started.
* ``TableTail`` follows a compacted partition and catches up to its end.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from monitoring.config import Settings
from monitoring.runtime import topics
from monitoring.runtime.lease import Fenced, FencedOutputs, Lease
from monitoring.runtime.outputs import consumer_config
from monitoring.runtime.standby import TableTail

pytestmark = pytest.mark.integration


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def leases(kafka_settings: Settings) -> Iterator[Callable[[], Lease]]:
    made: list[Lease] = []

    def make() -> Lease:
        lease = Lease(kafka_settings.kafka, "alerting")
        made.append(lease)
        return lease

    yield make
    for lease in made:
        lease.close()


def holders(ls: list[Lease]) -> list[Lease]:
    return [x for x in ls if x.poll()]


def committed(settings: Settings, topic: str) -> list[bytes]:
    """Values of ``topic[0]`` a read_committed consumer sees."""
    c = Consumer(
        consumer_config(
            settings.kafka, "t-reader", **{"enable.partition.eof": True,
                                           "isolation.level": "read_committed"}
        )
    )  # fmt: skip
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    out: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                continue
            out.append(m.value())
    finally:
        c.close()
    raise AssertionError(f"{topic}: no end reached")


def test_one_holder_and_failover_when_it_leaves(leases: Callable[[], Lease]) -> None:
    a, b = leases(), leases()
    wait_until(lambda: len(holders([a, b])) == 1, 30, "one holder")
    first = holders([a, b])[0]
    other = b if first is a else a
    c = leases()  # a third member joins: the lease stays where it is
    wait_until(lambda: c.consumer.assignment() is not None and c.poll() is False, 5, "c joined")
    for _ in range(20):
        assert first.poll() and not other.poll() and not c.poll()
        time.sleep(0.1)
    assert first.confirm() and first.fresh()
    t0 = time.monotonic()
    first.close()
    wait_until(lambda: len(holders([other, c])) == 1, 30, "a new holder")
    print(f"lease handed over in {time.monotonic() - t0:.2f} s after a clean leave")


def test_a_new_holder_fences_the_former_holders_producer(
    kafka_settings: Settings, leases: Callable[[], Lease]
) -> None:
    topic = topics.topic_name(kafka_settings.kafka, topics.ALERTING_STATE)
    a, b = leases(), leases()
    wait_until(lambda: len(holders([a, b])) == 1, 30, "one holder")
    old = FencedOutputs(kafka_settings.kafka, a if a.held else b)
    old.init()
    asyncio.run(old.send(topic, b"k", b"old-1"))
    assert asyncio.run(old.flush())
    asyncio.run(old.send(topic, b"k", b"old-2"))  # open when the new holder starts
    new = FencedOutputs(kafka_settings.kafka, b if a.held else a)
    new.init()  # aborts old-2's transaction and fences the producer
    with pytest.raises(Fenced):
        asyncio.run(old.send(topic, b"k", b"old-3"))
        asyncio.run(old.flush())
    asyncio.run(new.send(topic, b"k", b"new-1"))
    assert asyncio.run(new.flush())
    assert committed(kafka_settings, topic) == [b"old-1", b"new-1"]


def test_a_commit_from_a_member_without_the_lease_is_refused(
    kafka_settings: Settings, leases: Callable[[], Lease]
) -> None:
    """The group generation fences too: a member expelled from the group (here: one
    that left) cannot commit a transaction, even with a producer nobody fenced."""
    topic = topics.topic_name(kafka_settings.kafka, topics.ALERTING_STATE)
    a = leases()
    wait_until(lambda: a.poll(), 30, "the lease")
    out = FencedOutputs(kafka_settings.kafka, a)
    out.init()
    asyncio.run(out.send(topic, b"k", b"v1"))
    assert asyncio.run(out.flush())
    meta = a.group_metadata()
    a.close()  # leaves the group: its generation is over
    asyncio.run(out.send(topic, b"k", b"v2"))
    a.group_metadata = lambda: meta  # type: ignore[method-assign]
    with pytest.raises(Fenced):
        asyncio.run(out.flush())
    assert committed(kafka_settings, topic) == [b"v1"]


def test_table_tail_follows_a_compacted_partition(kafka_settings: Settings) -> None:
    topic = topics.topic_name(kafka_settings.kafka, topics.NOTIFIER_STATE)
    lease = Lease(kafka_settings.kafka, "notifier")
    try:
        wait_until(lease.poll, 30, "the lease")
        out = FencedOutputs(kafka_settings.kafka, lease)
        out.init()
        tail = TableTail(kafka_settings.kafka, topic)
        stop = threading.Event()
        seen: list[int] = []

        def follow() -> None:
            while not stop.is_set():
                tail.poll(0.05)
                seen.append(len(tail.table))

        t = threading.Thread(target=follow)
        t.start()
        for i in range(50):
            asyncio.run(out.send(topic, f"k{i % 10}".encode(), str(i).encode()))
        asyncio.run(out.send(topic, b"k0", None))
        assert asyncio.run(out.flush())
        stop.set()
        t.join()
        tail.catch_up(30)
        assert tail.table == {f"k{i}".encode(): str(40 + i).encode() for i in range(1, 10)}
        tail.close()
    finally:
        lease.close()


def test_a_term_that_ends_with_the_lease_still_held_starts_again(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    """A notifier whose term ends (here: a vetoed send) while it still holds the lease
    takes over again in place, with its metrics registered once."""
    from fixtures.agents import Running, wait_for
    from prometheus_client import CollectorRegistry

    from monitoring.agents.notifier import NotifierAgent
    from monitoring.alerts.manager_config import ManagerConfig

    config = tmp_path / "notifier.yml"
    config.write_text(
        "route: {receiver: ops}\n"
        "receivers: [{name: ops, webhook_configs: [{url: 'http://127.0.0.1:9/hook'}]}]\n"
    )
    agent = NotifierAgent(kafka_settings, CollectorRegistry(), ManagerConfig.load(str(config)))
    running = Running(agent)
    try:
        wait_for(lambda: agent.role == "active", 60, "the first term")
        first = agent.lease
        assert first is not None
        agent._fenced = "test: a vetoed send"
        wait_for(lambda: agent.role == "active" and first.terms == 2, 60, "a second term")
        assert running.error is None and running.thread.is_alive()
    finally:
        running.stop()
