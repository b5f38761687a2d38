"""The store's ``alerts`` and ``alerts.commands`` topics under hostile input: garbage,
a wrong record, an unknown schema version, an oversized key, out-of-range or future
times are counted with a reason (dead-lettered where the store is the only reader)
and the next good message is still buffered."""

from __future__ import annotations

import json
import time
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME

from monitoring.sinks.clickhouse.store import MAX_ACK_KEY
from unit.test_store_hardening import CODEC, Msg, make

ALERT = "monitoring.Alert"


def alert(**kw: Any) -> dict[str, Any]:
    rec = {"fingerprint": "abc", "status": "FIRING", "labels": {"alertname": "A"},
           "annotations": {}, "starts_at_ms": 1_000, "ends_at_ms": None, "generator_url": "",
           "severity": "", "value": 1.0, "rule": "", "evaluated_at_ms": 1_000}  # fmt: skip
    return rec | kw


class At(Msg):
    def __init__(self, value: bytes, topic: str, ts: int) -> None:
        super().__init__(value, topic=topic)
        self.ts = ts

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, self.ts


def invalid(registry: Any, reason: str) -> float:
    labels = {"reason": reason}
    return registry.get_sample_value("monitoring_store_invalid_events_total", labels) or 0


def test_bad_alert_records_are_dead_lettered_with_a_reason_and_the_store_goes_on() -> None:
    store, _client, _consumer, letters, _clock, registry = make()
    topic = next(t for t, kinds in store.expected.items() if ALERT in kinds)
    good = CODEC.encode(ALERT, alert())
    future = bytearray(good)
    future[2:10] = b"\xff" * 8  # a fingerprint of no schema this store knows
    for value in (b"\x00garbage", bytes(future), CODEC.encode("monitoring.Delivery",
                  _delivery()), CODEC.encode(ALERT, alert(starts_at_ms=-(2**62)))):  # fmt: skip
        store.handle(Msg(value, topic=topic))
        store.handle(Msg(good, topic=topic))
    assert store.writer.pending == 4  # every good one after a bad one
    reasons = [r for _k, _v, r, _d, _s in letters.letters]
    assert len(reasons) == 4 and all(reasons), reasons
    assert "unexpected-record" in reasons and "out-of-range" in reasons
    assert sum(invalid(registry, r) for r in set(reasons)) == 4


def _delivery() -> dict[str, Any]:
    from fixtures.store_records import good

    return good("monitoring.Delivery")


def test_bad_acknowledgements_are_counted_and_times_ahead_or_negative_are_now() -> None:
    store, _client, _consumer, _letters, _clock, registry = make()
    topic = store.commands_topic
    ack = {"kind": "acknowledge", "fingerprint": "abc", "by": "me"}
    now = int(time.time() * 1000)
    huge = json.dumps(ack | {"fingerprint": "x" * (MAX_ACK_KEY + 1)}).encode()
    for value in (b"\xff\xfe", b"[]", huge):
        store.handle(At(value, topic, now))
    assert store.writer.pending == 0 and invalid(registry, "bad-command") == 3
    for ts in (now + 2 * 3_600_000, -5, now - 60_000):
        store.handle(At(json.dumps(ack).encode(), topic, ts))
    assert store.writer.pending == 3
    ahead, negative, recent = store.writer.buffers["alert_acks"].rows(0, 3)[0]
    assert now <= ahead < now + 60_000 and now <= negative < now + 60_000  # now instead
    assert recent == now - 60_000  # a record's own time when it is plausible
