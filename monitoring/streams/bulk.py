"""Bulk delivery: a topic's messages handed to one handler call per fetched run.

Faust hands every message to its streams one at a time, and per message its consumer
loop (``Consumer._drain_messages``) creates two tasks and waits on them
(``wait_first(callback(message), suspend_flow.wait())``), then the conductor, the
channel queue and the stream each take their turn: about 240 µs of CPU per message on
this machine (``monitoring bench faust-baseline``), a ceiling of 4-5 k messages/s
however little the agent does. A topic registered with ``BulkApp.bulk`` skips that
path: the consumer collects its messages as ``getmany`` yields them and awaits the
handler once per run (at most ``max_messages``), about 13 µs a message.

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
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import Message, TopicT
from mode import Service

BulkHandler = Callable[[Sequence[Message]], Awaitable[None]]
MAX_RUN = 5_000  # messages per handler call, at most
_YIELD_EVERY = 100  # messages for other topics between event-loop turns, as Faust does


class BulkConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, with bulk delivery for ``BulkApp.bulk`` topics."""

    async def _drain_messages(self, fetcher: Any) -> None:  # the fetcher's loop
        app = cast(BulkApp, self.app)
        handlers = app.bulk_handlers
        if not handlers:
            await super()._drain_messages(fetcher)
            return
        callback = self.callback
        read_offset = self._read_offset
        acks_enabled_for = app.topics.acks_enabled_for
        consumer_stopped = cast(Service, self)._stopped.is_set
        fetcher_stopped = cast(Service, fetcher)._stopped.is_set
        runs: dict[str, list[Message]] = {}
        since_yield = 0
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                ait = self.getmany(timeout=1.0)
                await self.sleep(0)
                if self.should_stop:
                    continue
                async for tp, message in ait:
                    offset = message.offset
                    last = read_offset[tp]
                    if last is not None and offset < last:
                        continue  # already read: Faust drops these too
                    if last and offset - last > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last + 1, offset)  # lets commits pass it
                    if tp.topic in handlers:
                        run = runs.setdefault(tp.topic, [])
                        run.append(message)
                        # as Faust's loop does per message: getmany stops yielding once
                        # a rebalance begins, and the seek that ends it resets this
                        read_offset[tp] = offset
                        if len(run) >= MAX_RUN:
                            await self._deliver(runs)
                        continue
                    since_yield += 1
                    if since_yield > _YIELD_EVERY:
                        await asyncio.sleep(0)
                        since_yield = 0
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    read_offset[tp] = offset
                await self._deliver(runs)
                await self._commit_if_due()
        except self.consumer_stopped_errors:
            if app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if app.should_stop:
                return
            raise

    async def _deliver(self, runs: dict[str, list[Message]]) -> None:
        """Hand each topic's run to its handler, without the messages fetched before a
        rebalance (flow stopped, or an older generation: Faust's streams skip these
        too). Faust's seek to the committed offsets, which comes after, fetches them
        again (and resets the read offsets they moved: see ``_drain_messages``)."""
        app = cast(BulkApp, self.app)
        pending = [(topic, run) for topic, run in runs.items() if run]
        runs.clear()
        inbound = app.monitor.stream_inbound_time if app.monitor is not None else None
        for topic, run in pending:
            if not self.flow_active:
                return
            generation = app.consumer_generation_id
            # generations only grow along a run: equal ends mean all equal
            if run[0].generation_id != generation or run[-1].generation_id != generation:
                run = [m for m in run if m.generation_id == generation]
                if not run:
                    continue
            if inbound is not None:  # Faust's "stream is slow" check reads this
                now = time.monotonic()
                for tp in {m.tp for m in run}:
                    inbound[tp] = now
            await app.bulk_handlers[topic](run)

    async def _commit_if_due(self) -> None:
        every = self._commit_every
        if every is not None and self._n_acked >= every:
            self._n_acked = 0
            await self.commit()


class BulkTransport(faust_aiokafka.Transport):
    """The aiokafka transport, with ``BulkConsumer``."""

    Consumer = BulkConsumer


class BulkApp(faust.App):
    """A Faust app whose topics can be consumed in bulk (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
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

    def _new_transport(self) -> Any:
        return BulkTransport(self.conf.broker_consumer, self)
