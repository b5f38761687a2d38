"""Bulk delivery: a topic's messages handed to one handler call per fetched run.

Faust hands every message to its streams one at a time, and per message its consumer
loop (``Consumer._drain_messages``) creates two tasks and waits on them
(``wait_first(callback(message), suspend_flow.wait())``), then the conductor, the
channel queue and the stream each take their turn: about 240 µs of CPU per message on
this machine (``monitoring bench faust-baseline``), a ceiling of 4-5 k messages/s
however little the agent does. A topic registered with ``BulkApp.bulk`` skips that
path: the consumer takes each fetch a partition at a time, as ``Consumer.getmany``
would yield it, and awaits the handler once per run of messages (``split_runs``),
about 9 µs a message.

This module is the project's one use of Faust internals (``_drain_messages``,
``_wait_next_records``, ``_to_message``, ``_read_offset``, ``_add_gap``, ...); each name
and behaviour it relies on is pinned by ``tests/unit/test_faust_contract.py``, and
Faust's version is pinned exactly.

Everything else stays Faust's: the consumer group, rebalances, the fetcher, acks
(``BulkApp.ack``, Faust's own bookkeeping) and offset commits. A run fetched before a
rebalance is dropped, as Faust drops its streams' buffers then: its messages are
fetched again from the committed offsets.

>>> app = BulkApp("example", broker="kafka://127.0.0.1:9092")
>>> async def handle(messages): ...
>>> app.bulk(app.topic("samples"), handle)
>>> sorted(app.bulk_handlers)
['samples']
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message, TopicT
from mode import Service

BulkHandler = Callable[[Sequence[Message]], Awaitable[None]]
# a handler call takes at most this many messages or bytes of values (at least one
# message), and the event loop gets a turn between calls: timers (checkpoints, idle
# closes) and other agents wait no longer than one run (tens of ms here)
MAX_RUN = 2_000
MAX_RUN_BYTES = 256 * 1024
# what a poll decodes at most (Faust's ``broker_max_poll_records``; None: every record
# fetched). A cap of 5,000 with a 16 MiB fetch was tried: the CI rehearsal's model
# metrics test then lost samples to closed windows (docs/runtime.md, "Bounded polls")
MAX_POLL_RECORDS: int | None = None
# how often the worker's consumer refreshes its metadata (aiokafka's default: 5 min). A
# subscribed topic the broker did not report (a broker just restarted, whose metadata
# is still loading, or a topic created after the worker) gets no partitions in the
# group's assignment until a refresh sees it: for this long, nothing of it is read
METADATA_MAX_AGE_MS = 10_000


class CommittedConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, its worker consumer reading committed records only.

    Faust reads ``read_uncommitted`` unless ``processing_guarantee`` is exactly-once,
    but the alert evaluator writes recording-rule and ``ALERTS`` samples in its lease's
    transactions (docs/ha.md): what a fenced evaluator wrote is aborted, and the new
    holder writes the same evaluations again; read uncommitted, a worker aggregated
    both (a window's count and sum doubled)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka takes it at start(), when it creates the fetcher
        consumer._isolation_level = "read_committed"
        consumer._client._metadata_max_age_ms = METADATA_MAX_AGE_MS  # read each refresh
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        """Faust's poll, fair across partitions when capped: aiokafka drains partitions
        in the order their fetches arrived, so a capped poll would serve a partition
        with a deep backlog again and again and leave the others (another topic's few
        records) waiting behind it. Each partition served moves behind those it was
        not, so the next poll starts where this one stopped."""
        records = await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )
        pending = consumer._fetcher._records  # an OrderedDict: tp -> what is left
        for tp in records:
            if tp in pending:
                pending.move_to_end(tp)
        return records

    def request_rejoin(self) -> bool:
        """Have the group coordinator rejoin the group (from any thread): every partition
        is revoked and assigned again, each read from its committed offset. False if
        the consumer has not started."""
        consumer = self._consumer
        if consumer is None:
            return False
        self.thread_loop.call_soon_threadsafe(consumer._coordinator.request_rejoin)
        return True


class BulkConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with bulk delivery for ``BulkApp.bulk`` topics, reading
    committed records only (``CommittedConsumerThread``)."""

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CommittedConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: Any) -> None:  # the fetcher's loop
        app = cast(BulkApp, self.app)
        if not app.bulk_handlers:
            await super()._drain_messages(fetcher)
            return
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                await self._drain_once()
        except self.consumer_stopped_errors:
            if app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise

    async def _drain_once(self) -> None:
        """One fetch, as ``Consumer.getmany`` and ``_drain_messages`` take it, but a
        partition's records at a time: messages of bulk topics are collected into runs,
        the others go to Faust's conductor one by one."""
        app = cast(BulkApp, self.app)
        records, active = await self._wait_next_records(1.0)
        if not records or self.should_stop:
            return
        if not self.flow_active:
            await self.perform_seek()  # as getmany does: fetched before a rebalance
            return
        handlers, read_offset = app.bulk_handlers, self._read_offset
        to_message = self._to_message
        runs: dict[str, list[list[Message]]] = {}
        others: dict[TP, list[Message]] = {}
        for tp, recs in records.items():
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                continue
            app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            last = read_offset[tp]
            if last is not None:
                recs = [r for r in recs if r.offset >= last]  # already read: Faust drops these
                if not recs:
                    continue
            if app.topics.acks_enabled_for(tp.topic):
                for start, end in offset_gaps(last, [r.offset for r in recs]):
                    await self._add_gap(tp, start, end)  # lets commits pass them, as Faust does
            messages: list[Message] = [to_message(tp, r) for r in recs]
            read_offset[tp] = messages[-1].offset  # the seek after a rebalance resets it
            if tp.topic in handlers:
                runs.setdefault(tp.topic, []).append(messages)
            else:
                others[tp] = messages
        # the other topics: Faust's own path, one message at a time in its scheduler's
        # round-robin order over topics and partitions (an agent joining two topics,
        # such as predictions and labels, relies on them advancing together)
        for _, message in self.scheduler.iterate(others):
            if not self.flow_active:
                break
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
        for topic, per_partition in runs.items():
            for part in split_runs(interleave(per_partition)):
                await self._deliver(topic, part)
                await asyncio.sleep(0)
        every = self._commit_every
        if every is not None and self._n_acked >= every:
            self._n_acked = 0
            await self.commit()

    async def _deliver(self, topic: str, run: list[Message]) -> None:
        """Hand a run to its topic's handler, without the messages fetched before a
        rebalance (flow stopped, or an older generation: Faust's streams skip these
        too). Faust's seek to the committed offsets, which comes after, fetches them
        again (and resets the read offsets they moved)."""
        app = cast(BulkApp, self.app)
        if not self.flow_active:
            return
        generation = app.consumer_generation_id
        # generations only grow along a run: equal ends mean all equal
        if run[0].generation_id != generation or run[-1].generation_id != generation:
            run = [m for m in run if m.generation_id == generation]
            if not run:
                return
        inbound = app.monitor.stream_inbound_time  # Faust's "stream is slow" check
        now = time.monotonic()
        for tp in {m.tp for m in run}:
            inbound[tp] = now
        await app.bulk_handlers[topic](run)


def offset_gaps(last: int | None, offsets: list[int]) -> list[tuple[int, int]]:
    """Offsets missing before and between ``offsets`` (each ``(first, end)``, end
    exclusive), after the last read offset ``last``: Faust's consumer loop records these
    (compacted or transactional topics have them) so that commits can pass them."""
    gaps = []
    for offset in offsets:
        if last and offset - last > 1:
            gaps.append((last + 1, offset))
        last = offset
    return gaps


def interleave(per_partition: list[list[Message]]) -> list[Message]:
    """One message of each partition in turn, as Faust's scheduler hands them out, so
    that partitions progress together (the alert evaluator's close marks rely on it:
    it evaluates once every partition it hears from is complete)."""
    if len(per_partition) == 1:
        return per_partition[0]
    return [m for turn in itertools.zip_longest(*per_partition) for m in turn if m is not None]


def split_runs(messages: list[Message]) -> list[list[Message]]:
    """``messages`` in order, cut into runs of at most ``MAX_RUN`` messages and about
    ``MAX_RUN_BYTES`` of values."""
    runs, start, size = [], 0, 0
    for i, m in enumerate(messages):
        size += len(m.value) if isinstance(m.value, bytes) else 0
        if i + 1 - start >= MAX_RUN or size >= MAX_RUN_BYTES:
            runs.append(messages[start : i + 1])
            start, size = i + 1, 0
    if start < len(messages):
        runs.append(messages[start:])
    return runs


class BulkTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with ``BulkConsumer``."""

    Consumer = BulkConsumer


class BulkApp(faust.App):
    """A Faust app whose topics can be consumed in bulk (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("broker_max_poll_records", MAX_POLL_RECORDS)
        super().__init__(*args, **kwargs)
        self.bulk_handlers: dict[str, BulkHandler] = {}

    def bulk(self, topic: TopicT, handler: BulkHandler) -> None:
        """Subscribe to ``topic``; its messages go to ``handler`` in runs, in partition
        order, and are acked with ``ack`` (not automatically)."""
        for name in topic.topics:
            self.bulk_handlers[name] = handler
        self.topics.add(topic)

    async def ack(self, message: Message) -> bool:
        """Mark a bulk-delivered message done: Faust commits up to its acked offsets
        (async, as ``Stream.ack`` is)."""
        return self.consumer.ack(message)

    def request_rejoin(self) -> bool:
        """Rejoin the consumer group (``CommittedConsumerThread.request_rejoin``): what a
        worker does when it finds a partition's state writer fenced (``runtime.driver``)."""
        thread = getattr(self.consumer, "_thread", None)
        return isinstance(thread, CommittedConsumerThread) and thread.request_rejoin()

    def _new_transport(self) -> Any:
        return BulkTransport(self.conf.broker_consumer, self)
