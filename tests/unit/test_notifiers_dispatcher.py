"""Dispatcher: retries and backoff, permanent failures, rate limit, idempotence, redaction.

HTTP is httpx.MockTransport and time is a fake clock whose sleep advances it, so the
backoff and rate-limit waits are asserted exactly.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog
from fixtures.notify import cpu_notification
from prometheus_client import CollectorRegistry

from monitoring.alerts.receivers import RateLimit, parse_receivers
from monitoring.sinks.notifiers.dispatcher import (
    DeliveredKeys,
    DeliveryRecord,
    Dispatcher,
    RetryPolicy,
    TokenBucket,
    delivery_key,
)

HOOK = "https://hooks.example/services/T0/B0/S3CRETHOOK?token=S3CRETQUERY"
PD_KEY = "S3CRETROUTINGKEY"
POLICY = RetryPolicy(initial_backoff_s=0.5, multiplier=2, max_backoff_s=4, jitter=0)


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


Handler = Callable[[httpx.Request], httpx.Response]


class Harness:
    """A dispatcher over a mock transport whose answers come from a script."""

    def __init__(
        self,
        answers: list[Any] | None = None,
        receivers: list[dict[str, Any]] | None = None,
        policy: RetryPolicy = POLICY,
        delivered: DeliveredKeys | None = None,
        default_rate_limit: RateLimit | None = None,
        handler: Handler | None = None,
    ) -> None:
        self.answers = list(answers or [])
        self.requests: list[httpx.Request] = []
        self.records: list[DeliveryRecord] = []
        self.time = FakeTime()
        self.registry = CollectorRegistry()
        rs = receivers or [{"name": "ops", "webhook_configs": [{"url": HOOK}]}]
        self.handler = handler
        self.http = httpx.AsyncClient(transport=httpx.MockTransport(self.answer))
        self.dispatcher = Dispatcher(
            parse_receivers(rs),
            policy=policy,
            delivered=delivered,
            on_record=self.records.append,
            default_rate_limit=default_rate_limit,
            registry=self.registry,
            http=self.http,
            sleep=self.time.sleep,
            clock=self.time.clock,
        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        if self.handler is not None:
            response = self.handler(request)
            self.requests.append(request)
            return response
        self.requests.append(request)
        a = self.answers.pop(0) if self.answers else 200
        if isinstance(a, Exception):
            raise a
        if isinstance(a, httpx.Response):
            return a
        return httpx.Response(a, text=f"answer {a} for {request.url}")

    def outcomes(self) -> list[tuple[int, str, int | None]]:
        return [(r.attempt, r.outcome, r.http_status) for r in self.records]


async def test_5xx_then_success_backs_off_exponentially() -> None:
    h = Harness([500, 503, 502, 200])
    (final,) = await h.dispatcher.deliver(cpu_notification("ops"))
    assert final.outcome == "delivered" and final.attempt == 4
    assert h.outcomes() == [
        (1, "retrying", 500),
        (2, "retrying", 503),
        (3, "retrying", 502),
        (4, "delivered", 200),
    ]
    assert h.time.sleeps == [0.5, 1.0, 2.0]
    assert len(h.requests) == 4
    assert (
        h.registry.get_sample_value(
            "monitoring_notifier_attempts_total",
            {"receiver": "ops", "channel": "webhook", "outcome": "retrying"},
        )
        == 3
    )


async def test_backoff_is_capped_and_retry_after_respected() -> None:
    assert [POLICY.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    h = Harness([httpx.Response(429, headers={"retry-after": "7"}), 200])
    await h.dispatcher.deliver(cpu_notification("ops"))
    assert h.outcomes() == [(1, "retrying", 429), (2, "delivered", 200)]
    assert h.time.sleeps == [7.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
async def test_4xx_is_a_permanent_failure(status: int) -> None:
    h = Harness([status])
    (final,) = await h.dispatcher.deliver(cpu_notification("ops"))
    assert (final.attempt, final.outcome, final.http_status) == (1, "failed", status)
    assert final.error == f"HTTP {status}: answer {status} for <redacted>"  # URL scrubbed
    assert h.time.sleeps == [] and len(h.requests) == 1
    assert delivery_key("ops", "webhook_configs[0]", cpu_notification("ops")) not in (
        h.dispatcher.delivered
    )


async def test_timeouts_and_refused_connections_are_retried() -> None:
    h = Harness([httpx.ReadTimeout("slow"), httpx.ConnectError("refused"), 200])
    (final,) = await h.dispatcher.deliver(cpu_notification("ops"))
    assert final.outcome == "delivered" and final.attempt == 3
    errors = [r.error for r in h.records[:2]]
    assert errors == [
        "timeout after 10s (ReadTimeout)",
        "connection failed (ConnectError): refused",
    ]


async def test_gives_up_after_max_attempts_or_time() -> None:
    h = Harness([503] * 10, policy=RetryPolicy(initial_backoff_s=1, max_attempts=3, jitter=0))
    (final,) = await h.dispatcher.deliver(cpu_notification("ops"))
    assert (final.attempt, final.outcome) == (3, "failed")
    assert final.error.startswith("gave up after 3 attempts: HTTP 503")
    # 1 + 2 + 4 = 7 s of waits fit in 10 s; the next wait (8 s) would not.
    policy = RetryPolicy(initial_backoff_s=1, give_up_after_s=10, jitter=0)
    h = Harness([503] * 10, policy=policy)
    (final,) = await h.dispatcher.deliver(cpu_notification("ops"))
    assert (final.attempt, final.outcome, h.time.sleeps) == (4, "failed", [1.0, 2.0, 4.0])


async def test_same_notification_is_sent_once_also_after_restore() -> None:
    h = Harness()
    n = cpu_notification("ops", ("firing", "firing"))
    assert [r.outcome for r in await h.dispatcher.deliver(n)] == ["delivered"]
    assert [r.outcome for r in await h.dispatcher.deliver(n)] == ["duplicate"]
    saved = h.dispatcher.delivered.to_bytes()
    # A new process restored from the checkpoint: same notification is not re-sent.
    h2 = Harness(delivered=DeliveredKeys.from_bytes(saved))
    (again,) = await h2.dispatcher.deliver(cpu_notification("ops", ("firing", "firing")))
    assert (again.outcome, again.attempt, len(h2.requests)) == ("duplicate", 0, 0)
    assert again.delivery_id == h.records[0].delivery_id
    # A state change (one alert resolved) is a new delivery.
    (changed,) = await h2.dispatcher.deliver(cpu_notification("ops", ("firing", "resolved")))
    assert changed.outcome == "delivered" and len(h2.requests) == 1


async def test_concurrent_identical_deliveries_send_once() -> None:
    h = Harness([500, 200])
    n = cpu_notification("ops")
    results = await asyncio.gather(*(h.dispatcher.deliver(n) for _ in range(5)))
    outcomes = sorted(r.outcome for (r,) in results)
    assert outcomes == ["delivered"] + ["duplicate"] * 4
    assert len(h.requests) == 2


async def test_keys_are_per_integration_so_a_replay_resends_only_failures() -> None:
    receivers = [
        {
            "name": "ops",
            "webhook_configs": [{"url": "http://ok.example/a"}, {"url": "http://bad.example/b"}],
        }
    ]
    h = Harness(
        receivers=receivers,
        handler=lambda req: httpx.Response(404 if req.url.host == "bad.example" else 200),
    )
    first = await h.dispatcher.deliver(cpu_notification("ops"))
    assert sorted((r.integration, r.outcome) for r in first) == [
        ("webhook_configs[0]", "delivered"),
        ("webhook_configs[1]", "failed"),
    ]
    again = await h.dispatcher.deliver(cpu_notification("ops"))
    assert sorted((r.integration, r.outcome) for r in again) == [
        ("webhook_configs[0]", "duplicate"),
        ("webhook_configs[1]", "failed"),
    ]
    assert [r.url.host for r in h.requests] == ["ok.example", "bad.example", "bad.example"]


async def test_rate_limit_spaces_sends_and_drops_nothing() -> None:
    receivers = [
        {
            "name": "ops",
            "webhook_configs": [{"url": HOOK}],
            "rate_limit": {"per_second": 2, "burst": 1},
        }
    ]
    h = Harness(receivers=receivers)
    for i in range(4):
        await h.dispatcher.deliver(cpu_notification("ops", group_key=f"g{i}"))
    assert [r.outcome for r in h.records] == ["delivered"] * 4
    assert h.time.sleeps == [0.5, 0.5, 0.5]
    assert (
        h.registry.get_sample_value(
            "monitoring_notifier_rate_limited_seconds_total", {"receiver": "ops"}
        )
        == 1.5
    )


def test_token_bucket_burst_then_rate() -> None:
    t = [0.0]
    b = TokenBucket(per_second=4, burst=3, clock=lambda: t[0])
    assert [b.reserve() for _ in range(5)] == [0.0, 0.0, 0.0, 0.25, 0.5]
    t[0] = 10.0  # long idle: refilled to the burst, not beyond
    assert [b.reserve() for _ in range(4)] == [0.0, 0.0, 0.0, 0.25]
    with pytest.raises(ValueError, match="per_second must be > 0"):
        TokenBucket(0)


def test_delivered_keys_bytes_round_trip_and_eviction() -> None:
    keys = DeliveredKeys(capacity=3)
    ks = [bytes([i]) * 16 for i in range(5)]
    for k in ks:
        keys.add(k)
    assert [k in keys for k in ks] == [False, False, True, True, True]
    data = keys.to_bytes()
    assert len(data) == 5 + 3 * 16 and data[:5] == b"\x01\x00\x00\x00\x03"
    back = DeliveredKeys.from_bytes(data)
    assert [k in back for k in ks] == [False, False, True, True, True] and len(back) == 3
    assert DeliveredKeys.from_bytes(DeliveredKeys().to_bytes()).to_bytes() == b"\x01" + bytes(4)
    with pytest.raises(ValueError, match="do not hold 3 keys"):
        DeliveredKeys.from_bytes(data[:-1])
    with pytest.raises(ValueError, match="unknown format"):
        DeliveredKeys.from_bytes(b"\x02" + data[1:])
    with pytest.raises(ValueError, match="must be 16 bytes"):
        keys.add(b"short")


def test_delivery_key_depends_on_state_not_order() -> None:
    n = cpu_notification("ops", ("firing", "resolved"))
    swapped = type(n)(n.receiver, n.group_key, n.group_labels, n.alerts[::-1], n.status)
    k = delivery_key("ops", "slack_configs[0]", n)
    assert k == delivery_key("ops", "slack_configs[0]", swapped) and len(k) == 16
    others = [
        delivery_key("ops", "slack_configs[1]", n),
        delivery_key("ops2", "slack_configs[0]", n),
        delivery_key("ops", "slack_configs[0]", cpu_notification("ops", ("firing", "firing"))),
        delivery_key("ops", "slack_configs[0]", n, key_extra="repeat-1"),
        delivery_key(
            "ops", "slack_configs[0]", cpu_notification("ops", ("firing", "resolved"), "g")
        ),
    ]
    assert k not in others and len(set(others)) == len(others)


async def test_unknown_receiver_and_send_resolved_filter() -> None:
    h = Harness(receivers=[{"name": "s", "slack_configs": [{"api_url": HOOK}]}])
    (rec,) = await h.dispatcher.deliver(cpu_notification("nobody"))
    assert (rec.outcome, rec.error) == ("failed", "unknown receiver")
    # Slack's send_resolved defaults to false: a resolved-only notification is not sent.
    assert await h.dispatcher.deliver(cpu_notification("s", ("resolved",))) == []
    # In a mixed group only the firing alert is listed.
    await h.dispatcher.deliver(cpu_notification("s", ("firing", "resolved")))
    (req,) = h.requests
    assert "db2" not in req.content.decode() and "db1" in req.content.decode()


async def test_secrets_never_reach_logs_records_or_errors(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    receivers = [
        {
            "name": "ops",
            "webhook_configs": [{"url": HOOK}],
            "pagerduty_configs": [{"routing_key": PD_KEY, "url": "https://pd.example/enqueue"}],
        }
    ]

    def echo(request: httpx.Request) -> httpx.Response:
        # A hostile receiver echoing the URL and the body (with the routing key) back.
        status = 500 if len(h.requests) < 2 else 400
        return httpx.Response(status, text=f"{request.url} {request.content.decode()}")

    h = Harness(receivers=receivers, handler=echo)
    with structlog.testing.capture_logs() as logs:
        await h.dispatcher.deliver(cpu_notification("ops"))
    assert {r.outcome for r in h.records} == {"retrying", "failed"}
    dumped = repr(logs) + repr(h.records) + caplog.text + repr([r.to_avro() for r in h.records])
    for secret in ("S3CRETHOOK", "S3CRETQUERY", PD_KEY, "/services/T0/B0"):
        assert secret not in dumped
    assert "<redacted>" in " ".join(r.error for r in h.records)
    assert {r.target for r in h.records} == {
        "https://hooks.example/<redacted>",
        "https://pd.example/<redacted>",
    }
    assert len(logs) == len(h.records) and {e["event"] for e in logs} == {"delivery"}


async def test_sends_per_receiver_are_bounded_and_backoff_holds_no_slot() -> None:
    active = {"now": 0, "max": 0}

    async def slow(request: httpx.Request) -> httpx.Response:
        active["now"] += 1
        active["max"] = max(active["max"], active["now"])
        await asyncio.sleep(0.01)
        active["now"] -= 1
        return httpx.Response(200)

    records: list[DeliveryRecord] = []
    policy = RetryPolicy(per_receiver=2, max_in_flight=64, jitter=0)
    http = httpx.AsyncClient(transport=httpx.MockTransport(slow))
    rs = parse_receivers([{"name": "ops", "webhook_configs": [{"url": HOOK}]}])
    async with Dispatcher(rs, policy=policy, http=http, on_record=records.append) as d:
        notes = [cpu_notification("ops", group_key=f"g{i}") for i in range(10)]
        await asyncio.gather(*(d.deliver(n) for n in notes))
    assert active["max"] == 2
    assert [r.outcome for r in records] == ["delivered"] * 10


async def test_records_round_trip_through_the_delivery_avro_contract() -> None:
    from monitoring.sinks.clickhouse.rows import DELIVERY_COLUMNS
    from monitoring.wire.codec import AvroCodec

    h = Harness([503, 200])
    await h.dispatcher.deliver(cpu_notification("ops"))
    codec = AvroCodec.from_directory()
    schema = json.loads(codec.latest("monitoring.Delivery").path.read_text())
    schema_fields = [f["name"] for f in schema["fields"]]
    assert schema_fields == list(DeliveryRecord.__dataclass_fields__)
    for rec in h.records:
        decoded = codec.decode(codec.encode("monitoring.Delivery", rec.to_avro()))
        assert decoded.name == "monitoring.Delivery"
        assert decoded.record == rec.to_avro()
    # The table takes every field (time_ms as `time`, plus `version`).
    assert set(DELIVERY_COLUMNS) == (set(schema_fields) - {"time_ms"}) | {"time", "version"}
