"""Notifier: alerts topic -> alert manager (routing, grouping, silences, inhibition,
escalation) -> receivers (email, Slack, PagerDuty, webhooks, Alertmanager).

Thin wiring around ``monitoring.alerts.alert_manager.AlertManager`` (pure, clock
explicit) and ``monitoring.sinks.notifiers.dispatcher.Dispatcher`` (retries, rate
limits, idempotent delivery). Like the alert evaluator it reads every partition of
its topics (``assign``): grouping needs every alert of a group in one place, so one
notifier is active per deployment; with ``ha.enabled`` more may run: the holder of the
``notifier`` lease delivers, the others stand by reading the state and the delivery log
(``runtime/lease.py``, docs/ha.md).

Commands (create/expire silence, acknowledge) travel on the compacted
``alerts.commands`` topic: the HTTP API (``/api/v2/silences``...) and the CLI produce
them, every notifier applies them in order, and a restart replays them.

State: the manager's records (one per aggregation group, written when it changed), the
delivered-notification keys, the notifications still in flight and the positions in
both topics go to the compacted ``alerts.notifier.state`` topic every
``checkpoint_interval``, deliveries in flight or not: a restart re-sends the
notifications that were in flight (a receiver down for hours does not hold checkpoints
back) and skips those whose delivery key is in the snapshot. Records larger than the
message limit (a group of 50,000 alerts, silences with long comments) are written in
chunks (``runtime.state_chunks``). A state that no longer reads is logged and counted,
and the notifier starts afresh from the beginning of its topics rather than crash-loop.

Every record on the alerts topic that is not an ``Alert`` this version reads (garbage,
another record type, a schema version it does not know, an empty value) goes to the
dead-letter topic with the reason; bad commands are skipped and counted.
Every delivery attempt's outcome goes to the ``alerts.deliveries`` topic, which the
store keeps in the ``deliveries`` table (secrets redacted).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.commands import (
    CommandError,
    CreateSilence,
    ExpireSilence,
    command_to_bytes,
    new_silence_id,
    parse_command,
)
from monitoring.alerts.grouping import notification_from_json, notification_to_json
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import Notification
from monitoring.alerts.receivers import parse_receivers
from monitoring.alerts.silences import SilenceLimitError
from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.runtime import consume, topics
from monitoring.runtime.changelog import read_table
from monitoring.runtime.kafka_client import client_config
from monitoring.runtime.lease import Fenced, FencedOutputs, Lease
from monitoring.runtime.outputs import DeadLetters, Outputs
from monitoring.runtime.standby import TableTail, Tail, offsets_since, run_in_terms, take_over
from monitoring.runtime.state_chunks import ChunkedRecords, join
from monitoring.sinks.notifiers.dispatcher import (
    DeliveredKeys,
    DeliveryRecord,
    Dispatcher,
    NotifierMetrics,
    Vetoed,
)
from monitoring.wire.alert_encoding import ALERT, from_record
from monitoring.wire.codec import AvroCodec, DecodeError

log = get_logger("notifier")
DELIVERY = "monitoring.Delivery"
STATE_VERSION = 1
_DELIVERED, _POSITIONS, _INFLIGHT = b"delivered", b"positions", b"inflight"
_AM = "am:"  # prefix of the alert manager's own records (meta, one per group)
DELIVERED_CAPACITY = 100_000  # 1.6 MB of keys: the state record stays under 4 MB
# A standby reads the delivery log this far back (and on): deliveries after the last
# checkpoint a failed active instance wrote are skipped by its successor too.
DELIVERY_LOG_HORIZON_MS = 3_600_000


def now_ms() -> int:
    return int(time.time() * 1000)


def _json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; ``ValueError`` (a 400) otherwise."""
    try:
        data = json.loads(body or b"{}")
    except RecursionError:  # not a ValueError: it was a 500 on every such request
        raise ValueError("the body is nested too deep") from None
    if not isinstance(data, dict):
        raise ValueError(f"the body must be a JSON object, not {type(data).__name__}")
    return data


class NotifierAgent:
    """Consumes alerts and commands, flushes due groups, delivers, checkpoints."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        config: ManagerConfig,
        codec: AvroCodec | None = None,
    ) -> None:
        self.settings = settings
        k = settings.kafka
        self.config = config
        self.codec = codec or AvroCodec.from_directory()
        self.max_silences = settings.notifier.max_silences
        self.manager = AlertManager(config, max_silences=self.max_silences)
        self.receivers = parse_receivers(list(config.receivers))
        self.registry = registry
        self.delivery_metrics = NotifierMetrics(registry)  # one set for every term
        self.alerts_topic = topics.topic_name(k, topics.ALERTS)
        self.commands_topic = topics.topic_name(k, topics.ALERT_COMMANDS)
        self.state_topic = topics.topic_name(k, topics.NOTIFIER_STATE)
        self.deliveries_topic = topics.topic_name(k, topics.NOTIFY_DELIVERIES)
        self.outputs: Outputs = Outputs(k)
        self.chunks = ChunkedRecords(k.max_message_bytes)
        self.lease: Lease | None = None  # with HA: held while this instance is active
        self.role = "single"  # or standby / active (docs/notifier.md, High availability)
        self._fenced = ""  # why a send was vetoed: the term ends
        # delivered according to alerts.deliveries (read by a standby before it sends)
        self.logged = DeliveredKeys(DELIVERED_CAPACITY)
        self.dead_letters = DeadLetters(k, topics.topic_name(k, topics.DEAD_LETTER), "notifier")
        self.commands = Producer(client_config(k, acks="all"))
        self.positions: dict[str, dict[int, int]] = {}
        self.delivered = DeliveredKeys(DELIVERED_CAPACITY)
        self.dispatcher: Dispatcher | None = None
        self.consumer: Consumer | None = None
        self.lock = threading.Lock()  # the HTTP API reads the manager from its own thread
        self._inflight: dict[asyncio.Task[Any], Notification] = {}
        self._resend: list[Notification] = []  # in flight at the restored checkpoint
        self._dirty = False
        # checkpoint records not yet acknowledged: resent with the next checkpoint
        self._unwritten: dict[bytes, bytes | None] = {}
        self.invalid = Counter(
            "notifier_invalid_messages", "Messages skipped", ["reason"], registry=registry
        )

    # -- start -----------------------------------------------------------------------
    def start(self, raw: dict[bytes, bytes] | None = None) -> None:
        """Restore the snapshot (``raw``: the state topic as a standby read it, else read
        now), add the delivery log's keys, assign both topics from the saved positions."""
        k = self.settings.kafka
        if raw is None:
            raw = read_table(k, self.state_topic, 0)
        self.chunks.learn(raw)
        joined = join(raw)
        restored = _POSITIONS in joined.table and not joined.broken
        if joined.broken:
            self.invalid.labels("bad-state").inc()
            log.error("state_chunks_broken", keys=[b[:100].decode("utf-8", "replace")
                                                   for b in joined.broken[:10]])  # fmt: skip
        if restored:
            try:
                self._restore(joined.table)
            except Exception as e:  # an unreadable state must not crash-loop the notifier
                restored = False
                self.invalid.labels("bad-state").inc()
                log.error("state_unreadable", topic=self.state_topic, error=repr(e)[:300])
                self.manager = AlertManager(self.config, max_silences=self.max_silences)
                self.delivered = DeliveredKeys(DELIVERED_CAPACITY)
                self.positions, self._resend = {}, []
        for key in self.logged:  # delivered after the snapshot, before a failover
            self.delivered.add(key)
        # never commits: the state has the positions
        group = f"{k.topic_prefix}notifier"
        self.consumer = consume.new_consumer(k, group, **{"fetch.wait.max.ms": 20})
        assignment = []
        for topic in (self.alerts_topic, self.commands_topic):
            done = self.positions.setdefault(topic, {})
            for p in consume.partitions(self.consumer, topic):
                assignment.append(TopicPartition(topic, p, done.get(p, OFFSET_BEGINNING)))
        self.consumer.assign(assignment)
        log.info(
            "notifier_started",
            receivers=sorted(self.receivers),
            restored=restored,
            delivered_keys=len(self.delivered),
            from_delivery_log=len(self.logged),
        )

    def _restore(self, table: dict[bytes, bytes]) -> None:
        am = {k.decode()[len(_AM) :]: v for k, v in table.items() if k.startswith(b"am:")}
        self.manager = AlertManager.from_records(self.config, am, max_silences=self.max_silences)
        for sid, why in self.manager.silences.dropped:  # e.g. a regex RE2 refuses
            self.invalid.labels("bad-silence").inc()
            log.warning("silence_dropped", silence=sid[:100], error=why[:300])
        self.delivered = DeliveredKeys.from_bytes(table[_DELIVERED], DELIVERED_CAPACITY)
        saved = json.loads(table[_POSITIONS])
        if saved.get("v") != STATE_VERSION:
            raise ValueError(f"{self.state_topic}: unknown state version {saved.get('v')}")
        self.positions = {t: {int(p): o for p, o in ps.items()} for t, ps in saved["p"].items()}
        self._resend = [notification_from_json(n) for n in json.loads(table.get(_INFLIGHT, b"[]"))]

    # -- high availability -------------------------------------------------------------
    def _log_delivery(self, m: Any) -> None:
        """One record of the delivery log, read by a standby: a delivered key counts."""
        try:
            rec = self.codec.decode(m.value() or b"").record
            if rec["outcome"] == "delivered":
                self.logged.add(bytes.fromhex(rec["delivery_id"]))
        except (DecodeError, KeyError, TypeError, ValueError):
            self.invalid.labels("bad-delivery-record").inc()

    async def take_over(self, lease: Lease, stop: threading.Event) -> bool:
        """Stand by, reading the state topic and the delivery log, until ``lease`` is
        held; then fence the former holder, restore and start (False if stopped)."""
        self.role = "standby"
        k = self.settings.kafka
        state = TableTail(k, self.state_topic)
        since = offsets_since(k, self.deliveries_topic, now_ms() - DELIVERY_LOG_HORIZON_MS)
        log_tail = Tail(k, since, self._log_delivery)
        try:
            outputs = await take_over(k, lease, [state, log_tail], stop)
            if outputs is None:
                return False
            self.outputs, self.lease = outputs, lease
            self.start(dict(state.table))
        finally:
            state.close()
            log_tail.close()
        self.role = "active"
        return True

    async def _before_send(self) -> None:
        """Every send waits for a fresh lease (``Lease.fresh``), else it is vetoed."""
        assert self.lease is not None
        try:
            await self.lease.ensure_fresh()
        except Fenced as e:
            self._fenced = str(e)
            raise Vetoed(str(e)) from e

    def _new_term(self) -> None:
        """Forget an ended term: the next one restores from the committed state."""
        k = self.settings.kafka
        self.manager = AlertManager(self.config, max_silences=self.max_silences)
        self.positions, self._resend, self._inflight, self._unwritten = {}, [], {}, {}
        self.delivered = DeliveredKeys(DELIVERED_CAPACITY)
        self.logged = DeliveredKeys(DELIVERED_CAPACITY)
        self.chunks = ChunkedRecords(k.max_message_bytes)
        self.consumer, self.dispatcher, self.lease = None, None, None
        self._dirty, self._fenced = False, ""
        self.outputs = Outputs(k)

    # -- the loop ----------------------------------------------------------------------
    async def run(self, stop: threading.Event) -> None:
        """Notify until ``stop`` is set; with ``ha.enabled``, while this instance holds
        the ``notifier`` lease (``runtime.standby.run_in_terms``)."""
        await run_in_terms(self.settings, "notifier", self, stop)

    async def _run_term(self, stop: threading.Event) -> None:
        """Consume, flush due groups, deliver, checkpoint; until ``stop`` is set (or,
        active under a lease, until it is lost: ``Fenced``)."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        cadence = consume.Cadence(self.settings.notifier.checkpoint_interval.total_seconds())
        async with Dispatcher(
            self.receivers,
            delivered=self.delivered,
            on_record=self._on_record,
            before_send=self._before_send if self.lease is not None else None,
            metrics=self.delivery_metrics,
        ) as self.dispatcher:
            try:
                for n in self._resend:  # in flight when the restored state was written
                    self._start_delivery(n)
                self._resend = []
                while not stop.is_set():
                    consume.check_lease(self.lease, "notifier", vetoed=self._fenced)
                    msgs = await asyncio.to_thread(
                        consume.fetch, self.consumer, 1000, 0.05, self.settings.kafka
                    )
                    with self.lock:
                        for m in msgs:
                            self.handle(m.topic() or "", m.partition() or 0, m)
                        due = self._due(now_ms())
                    for n in due:
                        self._start_delivery(n)
                    # between checkpoints, the delivery log is committed for a standby
                    await cadence.step(self._dirty, self.outputs, self.checkpoint)
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=30)
                await self.checkpoint()
                self.dead_letters.flush()
            finally:
                if isinstance(self.outputs, FencedOutputs):
                    for task in self._inflight:
                        task.cancel()
                consume.end_term(self.consumer, self.outputs)

    def _start_delivery(self, n: Notification) -> None:
        task = asyncio.create_task(self._deliver(n))
        self._inflight[task] = n
        task.add_done_callback(self._delivery_done)

    def _delivery_done(self, task: asyncio.Task[Any]) -> None:
        self._inflight.pop(task, None)
        self._dirty = True  # delivered keys changed

    def handle(self, topic: str, partition: int, msg: Any) -> None:
        """One alert state change or one command."""
        self.positions[topic][partition] = msg.offset() + 1
        self._dirty = True
        if topic == self.commands_topic:
            if msg.value() is None:
                return  # a compacted-away command
            try:
                self.manager.apply(msg.value(), msg.timestamp()[1])
            except (CommandError, ValueError, KeyError, TypeError) as e:
                self.invalid.labels("bad-command").inc()
                log.warning("command_rejected", error=str(e)[:300])
            return
        try:
            decoded = self.codec.decode(msg.value() or b"")
            if decoded.name != ALERT:
                raise DecodeError("unexpected-record", f"{decoded.name} on the alerts topic")
            alert = from_record(decoded.record)
        except DecodeError as e:
            self._dead_letter(msg, e.reason, str(e))
            return
        except (KeyError, TypeError, ValueError) as e:  # decodes, but is no valid alert
            self._dead_letter(msg, "invalid-alert", repr(e))
            return
        self.manager.receive(alert, now_ms())

    def _dead_letter(self, msg: Any, reason: str, detail: str) -> None:
        self.invalid.labels(reason).inc()
        consume.dead_letter(self.dead_letters, msg, reason, detail)

    def _due(self, now: int) -> list[Notification]:
        deadline = self.manager.next_deadline()
        if deadline is None or deadline > now:
            return []
        return self.manager.flush_due(now)

    async def _deliver(self, n: Notification) -> None:
        assert self.dispatcher is not None
        try:
            await self.dispatcher.deliver(n, key_extra=str(n.previous_ms))
        except Vetoed as e:
            log.warning("delivery_vetoed", receiver=n.receiver, reason=str(e)[:300])
        except Exception as e:  # the dispatcher records failures; this is a bug guard
            log.error("delivery_crashed", receiver=n.receiver, error=repr(e)[:300])

    def _on_record(self, rec: DeliveryRecord) -> None:
        self.outputs.produce_now(
            self.deliveries_topic,
            rec.delivery_id.encode(),
            self.codec.encode(DELIVERY, rec.to_avro()),
        )
        self.outputs.poll()

    async def checkpoint(self) -> None:
        """Snapshot manager, delivered keys, notifications in flight and positions."""
        with self.lock:
            records: list[tuple[bytes, bytes | None]] = [
                ((_AM + k).encode(), v) for k, v in self.manager.checkpoint().items()
            ]
            positions = {
                "v": STATE_VERSION,
                "p": {t: {str(p): o for p, o in ps.items()} for t, ps in self.positions.items()},
            }
            inflight = [notification_to_json(n) for n in self._inflight.values()]
            self._dirty = False
        if not await self.outputs.flush():
            self._dirty = True
            return
        records += [
            (_DELIVERED, self.delivered.to_bytes()),
            (_INFLIGHT, json.dumps(inflight).encode()),
            (_POSITIONS, json.dumps(positions).encode()),  # last: the snapshot is complete
        ]
        self._unwritten.update(records)
        holder = getattr(self.outputs, "holder", None)  # who wrote it, with HA
        headers = [("x-holder", holder)] if holder else None
        for key, value in list(self._unwritten.items()):
            for k, v in self.chunks.expand(key, value):
                await self.outputs.send(self.state_topic, k, v, headers=headers)
        if await self.outputs.flush():
            self._unwritten.clear()
        else:
            self._dirty = True

    # -- the HTTP API (runs in the status server's thread) ------------------------------
    def _command(self, key: str, cmd: Any) -> None:
        self.commands.produce(self.commands_topic, command_to_bytes(cmd), key.encode())
        left = self.commands.flush(10)
        if left:
            raise RuntimeError("the broker did not acknowledge the command")

    def api_post_silence(self, body: bytes) -> tuple[int, Any]:
        """``POST /api/v2/silences``: Alertmanager's PostableSilence; answers the id."""
        try:
            data = _json_object(body)
            sid = data.pop("id", None) or new_silence_id()
            cmd = parse_command({"kind": "create_silence", "id": sid, "silence": data})
        except (ValueError, CommandError) as e:
            return 400, {"error": str(e)}
        assert isinstance(cmd, CreateSilence)
        with self.lock:  # refused here with the reason; the command would be skipped
            try:
                self.manager.silences.check_room(sid, now_ms())
            except SilenceLimitError as e:
                self.invalid.labels("silence-limit").inc()
                return 400, {"error": str(e)}
        self._command(f"silence:{sid}", cmd)
        return 200, {"silenceID": sid}

    def api_expire_silence(self, body: bytes) -> tuple[int, Any]:
        """``POST /api/v2/silence/expire`` with ``{"id": ...}`` (DELETE in Alertmanager)."""
        try:
            cmd = parse_command({"kind": "expire_silence", **_json_object(body)})
        except (ValueError, CommandError) as e:
            return 400, {"error": str(e)}
        assert isinstance(cmd, ExpireSilence)
        self._command(f"silence:{cmd.id}", cmd)
        return 200, {"expired": cmd.id}

    def api_ack(self, body: bytes) -> tuple[int, Any]:
        """``POST /api/v2/acks`` with ``{"fingerprint"|"group_key", "by", "comment"}``."""
        try:
            cmd = parse_command({"kind": "acknowledge", **_json_object(body)})
        except (ValueError, CommandError) as e:
            return 400, {"error": str(e)}
        target = getattr(cmd, "fingerprint", None) or getattr(cmd, "group_key", "")
        self._command(f"ack:{target}", cmd)
        return 200, {"acknowledged": target}

    def _standby(self) -> tuple[int, Any] | None:
        if self.role == "standby":
            return 503, {"error": "this notifier is a standby: ask the active one"}
        return None

    def api_silences(self) -> tuple[int, Any]:
        """``GET /api/v2/silences``."""
        if (refused := self._standby()) is not None:
            return refused
        with self.lock:
            now = now_ms()
            return 200, [x.to_api(now) for x in self.manager.silences.list(now)]

    def api_alerts(self) -> tuple[int, Any]:
        """``GET /api/v2/alerts``: every alert with its silenced/inhibited/acked state."""
        if (refused := self._standby()) is not None:
            return refused
        with self.lock:
            return 200, [s.to_api() for s in self.manager.alerts(now_ms())]

    def health(self) -> dict[str, Any]:
        """For ``GET /healthz``."""
        return {
            "status": "ok",
            "receivers": sorted(self.receivers),
            "deliveries_in_flight": len(self._inflight),
            "delivered_keys": len(self.delivered),
            "role": self.role,
        }
