"""A runtime agent's readiness while its state restores: not ready before the first
assignment, ``restoring`` while a partition's changelog is read, ready after; served on
a real ApiServer's ``/-/ready``. And the notifier's failing receivers from its counter."""

from __future__ import annotations

import asyncio
import threading

import httpx
from prometheus_client import CollectorRegistry, Counter

from monitoring.api.server import ApiServer
from monitoring.ops.heartbeat import FailingReceivers
from monitoring.runtime.agent import Emit, Record, Records, StreamAgent
from monitoring.runtime.memory import MemoryRuntime


class Counting(StreamAgent[list[int]]):
    """Counts messages per partition."""

    name = "counting"
    sources = ("numbers",)
    state_topic = "counting.state"

    def restore(self, partition: int, table: dict[bytes, bytes]) -> list[int]:
        return [int(table.get(b"n", b"0"))]

    def snapshot(self, state: list[int]) -> Records | None:
        return [(b"n", str(state[0]).encode())]

    def handle(self, msg: Record, state: list[int], out: Emit) -> int:
        state[0] += 1
        return 1


async def test_not_ready_until_assigned_and_restored() -> None:
    rt = MemoryRuntime(Counting)
    gate = threading.Event()

    def slow_read(topic: str, p: int) -> dict[bytes, bytes]:
        assert gate.wait(30), "the test never opened the gate"
        return {b"n": b"5"}

    rt.driver.states._read_state = slow_read
    server = ApiServer(CollectorRegistry(), "127.0.0.1", 0, rt.driver.health).start()
    url = "http://{}:{}/-/ready".format(*server.address)
    try:
        async with httpx.AsyncClient() as client:
            r = await client.get(url)
            assert r.status_code == 503
            assert r.json()["reasons"] == ["waiting for the first partition assignment"]
            assigning = asyncio.create_task(rt.driver.assigned([0, 2]))
            for _ in range(500):  # the restore is under way (in its thread)
                r = await client.get(url)
                if "restoring state: partitions 0, 2" in r.json()["reasons"]:
                    break
                await asyncio.sleep(0.01)
            assert r.status_code == 503
            assert r.json()["reasons"] == [
                "restoring state: partitions 0, 2",
                "waiting for the first partition assignment",
            ]
            gate.set()
            await asyncio.wait_for(assigning, 30)
            r = await client.get(url)
            assert (r.status_code, r.json()) == (200, {"ready": True, "reasons": []})
            assert rt.driver.owned() == {"numbers": [0, 2]}
    finally:
        gate.set()
        server.stop()


def test_failing_receivers_follow_the_latest_outcomes() -> None:
    registry = CollectorRegistry()
    attempts = Counter(
        "monitoring_notifier_attempts", "", ["receiver", "channel", "outcome"], registry=registry
    )
    failing = FailingReceivers(registry)
    assert failing() == []
    attempts.labels("ops", "email", "failed").inc()
    attempts.labels("dev", "slack", "delivered").inc()
    assert failing() == ["ops"]
    assert failing() == ["ops"]  # nothing new: still failing
    attempts.labels("dev", "slack", "retrying").inc()
    assert failing() == ["dev", "ops"]
    attempts.labels("ops", "email", "delivered").inc()
    assert failing() == ["dev"]
