"""Notifier: alerts topic -> alert manager (routing, grouping, silences, inhibition,
escalation) -> receivers (email, Slack, PagerDuty, webhooks, Alertmanager).

Thin wiring around ``monitoring.alerts.alert_manager.AlertManager`` (pure, clock
explicit) and ``monitoring.sinks.notifiers.dispatcher.Dispatcher`` (retries, rate
limits, idempotent delivery). Like the alert evaluator it reads every partition of
its topics (``assign``): grouping needs every alert of a group in one place, so run
one notifier per deployment.

Commands (create/expire silence, acknowledge) travel on the compacted
``alerts.commands`` topic: the HTTP API (``/api/v2/silences``...) and the CLI produce
them, every notifier applies them in order, and a restart replays them.

State: the manager's records (one per aggregation group, written when it changed), the
delivered-notification keys and the positions in both topics go to the compacted
``alerts.notifier.state`` topic, written only when no
delivery is in flight, so a restart neither loses a notification (it re-flushes from
the previous snapshot) nor sends one twice (its delivery key is in the snapshot).
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
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import Notification
from monitoring.alerts.receivers import parse_receivers
from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.sinks.notifiers.dispatcher import DeliveredKeys, DeliveryRecord, Dispatcher
from monitoring.streams import topics
from monitoring.streams.alert_encoding import from_record
from monitoring.streams.changelog import read_table
from monitoring.streams.codec import AvroCodec, DecodeError
from monitoring.streams.outputs import Outputs

log = get_logger("notifier")
DELIVERY = "monitoring.Delivery"
STATE_VERSION = 1
_DELIVERED, _POSITIONS = b"delivered", b"positions"
_AM = "am:"  # prefix of the alert manager's own records (meta, one per group)
DELIVERED_CAPACITY = 100_000  # 1.6 MB of keys: the state record stays under 4 MB


def now_ms() -> int:
    return int(time.time() * 1000)


def _json_object(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object; ``ValueError`` (a 400) otherwise."""
    data = json.loads(body or b"{}")
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
        self.manager = AlertManager(config)
        self.receivers = parse_receivers(list(config.receivers))
        self.registry = registry
        self.alerts_topic = topics.topic_name(k, topics.ALERTS)
        self.commands_topic = topics.topic_name(k, topics.ALERT_COMMANDS)
        self.state_topic = topics.topic_name(k, topics.NOTIFIER_STATE)
        self.deliveries_topic = topics.topic_name(k, topics.NOTIFY_DELIVERIES)
        self.outputs = Outputs(k)
        self.commands = Producer({"bootstrap.servers": k.bootstrap_servers, "acks": "all"})
        self.positions: dict[str, dict[int, int]] = {}
        self.delivered = DeliveredKeys(DELIVERED_CAPACITY)
        self.dispatcher: Dispatcher | None = None
        self.consumer: Consumer | None = None
        self.lock = threading.Lock()  # the HTTP API reads the manager from its own thread
        self._inflight: set[asyncio.Task[Any]] = set()
        self._dirty = False
        # checkpoint records not yet acknowledged: resent with the next checkpoint
        self._unwritten: dict[bytes, bytes | None] = {}
        self.invalid = Counter(
            "notifier_invalid_messages", "Messages skipped", ["reason"], registry=registry
        )

    # -- start -----------------------------------------------------------------------
    def start(self) -> None:
        """Restore the snapshot and assign both topics from the saved positions."""
        k = self.settings.kafka
        table = read_table(k.bootstrap_servers, self.state_topic, 0)
        restored = _POSITIONS in table
        if restored:
            am = {k.decode()[len(_AM) :]: v for k, v in table.items() if k.startswith(b"am:")}
            self.manager = AlertManager.from_records(self.config, am)
            for sid, why in self.manager.silences.dropped:  # e.g. a regex RE2 refuses
                self.invalid.labels("bad-silence").inc()
                log.warning("silence_dropped", silence=sid[:100], error=why[:300])
            self.delivered = DeliveredKeys.from_bytes(table[_DELIVERED], DELIVERED_CAPACITY)
            saved = json.loads(table[_POSITIONS])
            if saved.get("v") != STATE_VERSION:
                raise ValueError(f"{self.state_topic}: unknown state version {saved.get('v')}")
            self.positions = {t: {int(p): o for p, o in ps.items()} for t, ps in saved["p"].items()}
        self.consumer = Consumer(
            {
                "bootstrap.servers": k.bootstrap_servers,
                "group.id": f"{k.topic_prefix}notifier",  # never commits: state has positions
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 20,
            }
        )
        assignment = []
        for topic in (self.alerts_topic, self.commands_topic):
            parts = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
            done = self.positions.setdefault(topic, {})
            for p in sorted(parts):
                assignment.append(TopicPartition(topic, p, done.get(p, OFFSET_BEGINNING)))
        self.consumer.assign(assignment)
        log.info(
            "notifier_started",
            receivers=sorted(self.receivers),
            restored=restored,
            delivered_keys=len(self.delivered),
        )

    # -- the loop ----------------------------------------------------------------------
    async def run(self, stop: threading.Event) -> None:
        """Consume, flush due groups, deliver, checkpoint; until ``stop`` is set."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        interval_s = self.settings.notifier.checkpoint_interval.total_seconds()
        last_checkpoint = time.monotonic()
        async with Dispatcher(
            self.receivers,
            delivered=self.delivered,
            on_record=self._on_record,
            registry=self.registry,
        ) as self.dispatcher:
            try:
                while not stop.is_set():
                    msgs = await asyncio.to_thread(self.consumer.consume, 1000, 0.05)
                    with self.lock:
                        for m in msgs:
                            if m.error() is None:
                                self.handle(m.topic() or "", m.partition() or 0, m)
                        due = self._due(now_ms())
                    for n in due:
                        task = asyncio.create_task(self._deliver(n))
                        self._inflight.add(task)
                        task.add_done_callback(self._inflight.discard)
                    if (
                        self._dirty
                        and not self._inflight
                        and time.monotonic() - last_checkpoint >= interval_s
                    ):
                        last_checkpoint = time.monotonic()
                        await self.checkpoint()
                if self._inflight:
                    await asyncio.wait(self._inflight, timeout=30)
                if not self._inflight:
                    await self.checkpoint()
            finally:
                self.consumer.close()

    def handle(self, topic: str, partition: int, msg: Any) -> None:
        """One alert state change or one command."""
        self.positions[topic][partition] = msg.offset() + 1
        self._dirty = True
        if topic == self.commands_topic:
            if msg.value() is None:
                return  # a compacted-away command
            try:
                self.manager.apply(msg.value(), msg.timestamp()[1])
            except CommandError as e:
                self.invalid.labels("bad-command").inc()
                log.warning("command_rejected", error=str(e)[:300])
            return
        try:
            decoded = self.codec.decode(msg.value())
        except DecodeError as e:
            self.invalid.labels(e.reason).inc()
            return
        self.manager.receive(from_record(decoded.record), now_ms())

    def _due(self, now: int) -> list[Notification]:
        deadline = self.manager.next_deadline()
        if deadline is None or deadline > now:
            return []
        return self.manager.flush_due(now)

    async def _deliver(self, n: Notification) -> None:
        assert self.dispatcher is not None
        try:
            await self.dispatcher.deliver(n, key_extra=str(n.previous_ms))
        except Exception as e:  # the dispatcher records failures; this is a bug guard
            log.error("delivery_crashed", receiver=n.receiver, error=repr(e)[:300])

    def _on_record(self, rec: DeliveryRecord) -> None:
        self.outputs.producer.produce(
            self.deliveries_topic,
            self.codec.encode(DELIVERY, rec.to_avro()),
            rec.delivery_id.encode(),
        )
        self.outputs.poll()

    async def checkpoint(self) -> None:
        """Snapshot manager, delivered keys and positions (no delivery may be in flight)."""
        with self.lock:
            records: list[tuple[bytes, bytes | None]] = [
                ((_AM + k).encode(), v) for k, v in self.manager.checkpoint().items()
            ]
            positions = {
                "v": STATE_VERSION,
                "p": {t: {str(p): o for p, o in ps.items()} for t, ps in self.positions.items()},
            }
            self._dirty = False
        if not await self.outputs.flush():
            self._dirty = True
            return
        records += [
            (_DELIVERED, self.delivered.to_bytes()),
            (_POSITIONS, json.dumps(positions).encode()),  # last: the snapshot is complete
        ]
        self._unwritten.update(records)
        for key, value in list(self._unwritten.items()):
            await self.outputs.send(self.state_topic, key, value)
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

    def api_silences(self) -> tuple[int, Any]:
        """``GET /api/v2/silences``."""
        with self.lock:
            now = now_ms()
            return 200, [x.to_api(now) for x in self.manager.silences.list(now)]

    def api_alerts(self) -> tuple[int, Any]:
        """``GET /api/v2/alerts``: every alert with its silenced/inhibited/acked state."""
        with self.lock:
            return 200, [s.to_api() for s in self.manager.alerts(now_ms())]

    def health(self) -> dict[str, Any]:
        """For ``GET /healthz``."""
        return {
            "status": "ok",
            "receivers": sorted(self.receivers),
            "deliveries_in_flight": len(self._inflight),
            "delivered_keys": len(self.delivered),
        }
