"""What ``runtime.bulk`` relies on in Faust's internals, pinned: an upgrade of Faust that
changes any of it fails here, not in production (no broker: the consumer is never
started).

Each private name the bulk consumer uses exists with the signature it calls it with, and
the behaviours it counts on hold: a gap recorded with ``_add_gap`` (its end inclusive,
as Faust's own loop records one) lets commits pass it, commits stop at the first
offset not acked, acks count only for topics whose acks are enabled, and messages carry
the generation they were fetched in.
"""

from __future__ import annotations

import inspect
import tempfile
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer as FaustConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from monitoring.runtime.bulk import BulkApp, BulkConsumer

# name -> the parameters ``runtime.bulk`` passes (after self), or None for an attribute
USED: dict[str, list[str] | None] = {
    "_drain_messages": ["fetcher"],
    "_wait_next_records": ["timeout"],
    "_to_message": ["tp", "record"],
    "_add_gap": ["tp", "offset_from", "offset_to"],
    "perform_seek": [],
    "wait_first": None,  # mode's Service.wait_first(*coros, timeout=None)
    "callback": None,  # set at start: the conductor's on_message
    "highwater": ["tp"],
    "commit": None,
    "ack": ["message"],
    "consumer_stopped_errors": None,
}
INIT_ATTRIBUTES = ("_read_offset", "_commit_every", "_n_acked", "_buffered_partitions",
                   "_gap", "_acked", "scheduler", "suspend_flow", "flow_active")  # fmt: skip


def app() -> BulkApp:
    a = BulkApp("contract", broker="kafka://127.0.0.1:1", key_serializer="raw",
                value_serializer="raw", web_enabled=False, topic_disable_leader=True,
                datadir=tempfile.mkdtemp())  # fmt: skip

    async def handle(messages: Any) -> None: ...

    a.bulk(a.topic("t"), handle)
    return a


class Msg:
    def __init__(self, offset: int, topic: str = "t") -> None:
        self.tp, self.offset, self.topic, self.acked = TP(topic, 0), offset, topic, False


@pytest.mark.parametrize("name", sorted(USED))
def test_the_private_names_used_exist_with_their_parameters(name: str) -> None:
    owner = faust_aiokafka.Consumer
    assert hasattr(owner, name) or name in ("callback",), name
    params = USED[name]
    if params is not None:
        sig = inspect.signature(getattr(owner, name))
        assert list(sig.parameters)[1 : 1 + len(params)] == params, (name, sig)


def test_the_consumer_is_ours_and_has_the_state_it_reads() -> None:
    c = app().consumer
    assert isinstance(c, BulkConsumer) and isinstance(c, FaustConsumer)
    for attr in INIT_ATTRIBUTES:
        assert hasattr(c, attr), attr
    assert c._read_offset[TP("t", 0)] is None  # a defaultdict: unread partitions are None


async def test_a_gap_lets_commits_pass_it_and_commits_stop_at_the_first_unacked() -> None:
    a = app()
    await a.topics._update_indices()  # what subscribing does: acks enabled for "t"
    c = a.consumer
    tp = TP("t", 0)
    assert a.topics.acks_enabled_for("t") and not a.topics.acks_enabled_for("other")
    await c._add_gap(tp, 5, 7)  # offsets 5, 6, 7 are not in the log (as bulk records it)
    for offset in (3, 4, 8):
        assert c.ack(Msg(offset))
    assert not c.ack(Msg(8))  # acked once
    assert c._new_offset(tp) == 9  # through the gap
    for offset in (10, 12):
        c.ack(Msg(offset))
    assert c._new_offset(tp) == 11  # 11 is not acked: the commit stops before it


def test_messages_carry_the_generation_they_were_fetched_in() -> None:
    """``_deliver`` drops a run's messages of an older generation (fetched before a
    rebalance) by comparing them with ``app.consumer_generation_id``."""
    a = app()
    c = a.consumer
    record = SimpleNamespace(topic="t", partition=0, offset=41, timestamp=1_000, key=b"k",
                             timestamp_type=0, headers=[], value=b"v", checksum=None,
                             serialized_key_size=1, serialized_value_size=1)  # fmt: skip
    a.consumer_generation_id = 7
    m = c._to_message(TP("t", 0), record)
    assert (m.generation_id, m.offset, m.timestamp, m.value) == (7, 41, 1.0, b"v")
    a.consumer_generation_id = 8  # a rebalance
    assert m.generation_id == 7


def test_the_poll_it_wraps_and_the_fetchers_order() -> None:
    """``CommittedConsumerThread._fetch_records`` wraps Faust's poll and reorders
    aiokafka's ``Fetcher._records`` (an OrderedDict drained in order)."""
    from aiokafka.consumer import fetcher

    sig = inspect.signature(faust_aiokafka.AIOKafkaConsumerThread._fetch_records)
    assert list(sig.parameters) == [
        "self",
        "consumer",
        "active_partitions",
        "timeout",
        "max_records",
    ]
    src = inspect.getsource(fetcher.Fetcher.__init__)
    assert "self._records = collections.OrderedDict()" in src
    drained = inspect.getsource(fetcher.Fetcher.fetched_records)
    assert "for tp in list(self._records.keys()):" in drained
    assert BulkApp("x", broker="kafka://127.0.0.1:1").conf.broker_max_poll_records is None
    # the consumer's settings it changes after construction are read at start / each refresh
    from aiokafka.client import AIOKafkaClient

    refresh = inspect.getsource(AIOKafkaClient._md_synchronizer)
    assert "timeout=self._metadata_max_age_ms / 1000" in refresh


async def test_a_capped_poll_starts_where_the_last_one_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Partitions served go behind those not reached: a deep backlog on one partition
    does not hold another topic's records back for more than one poll."""
    from collections import OrderedDict

    from monitoring.runtime.bulk import CommittedConsumerThread

    left = {TP("samples", 0): 10_000, TP("samples", 1): 10_000, TP("labels", 0): 3}
    pending: OrderedDict[TP, int] = OrderedDict(left)

    async def drain(
        self: Any, consumer: Any, active: Any, timeout: Any = None, max_records: Any = None
    ) -> dict[TP, int]:  # aiokafka's fetched_records: in order, up to the cap
        out, cap = {}, max_records
        for tp in list(pending):
            n = min(pending[tp], cap)
            out[tp], cap = n, cap - n
            pending[tp] -= n
            if not pending[tp]:
                del pending[tp]
            if not cap:
                break
        return out

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", drain)
    consumer = SimpleNamespace(_fetcher=SimpleNamespace(_records=pending))
    thread = CommittedConsumerThread.__new__(CommittedConsumerThread)  # not started
    polls = [
        await thread._fetch_records(consumer, None, timeout=0, max_records=5_000) for _ in range(3)
    ]
    assert [list(p) for p in polls] == [
        [TP("samples", 0)],
        [TP("samples", 1)],
        [TP("labels", 0), TP("samples", 0)],
    ]
