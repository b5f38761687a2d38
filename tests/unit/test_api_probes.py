"""Liveness and readiness on the shared ApiServer: ``/-/healthy`` and ``/-/ready`` with
their reasons, open to probes without the token, the detail only with it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.api.health import MAX_REASONS, readiness_reasons
from monitoring.api.server import ApiServer

TOKEN = "probe-t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Process:
    """A health dict to change between requests, and extra readiness reasons."""

    def __init__(self) -> None:
        self.h: dict[str, Any] = {"status": "ok", "secret_looking": "detail"}
        self.extra: list[str] = []

    def health(self) -> dict[str, Any]:
        return dict(self.h)

    def reasons(self) -> list[str]:
        return list(self.extra)


@pytest.fixture
def proc() -> Process:
    return Process()


@pytest.fixture
def server(proc: Process) -> Iterator[ApiServer]:
    guard = Guard.for_bind("127.0.0.1", token=TOKEN)
    s = ApiServer(
        CollectorRegistry(), "127.0.0.1", 0, proc.health, guard=guard, readiness=proc.reasons
    ).start()
    yield s
    s.stop()


def get(s: ApiServer, path: str, **kw: Any) -> httpx.Response:
    return httpx.get("http://{}:{}{}".format(*s.address, path), **kw)


def test_ready_and_healthy_without_a_token(server: ApiServer) -> None:
    r = get(server, "/-/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True, "reasons": []})
    r = get(server, "/-/healthy")
    assert (r.status_code, r.json()) == (200, {"status": "healthy"})
    assert get(server, "/metrics").status_code == 401  # the rest still wants it


def test_not_ready_while_restoring_or_catching_up_with_the_reasons(
    server: ApiServer, proc: Process
) -> None:
    proc.h.update(restoring=[3, 1], catching_up=[0])
    r = get(server, "/-/ready")
    assert r.status_code == 503
    assert r.json() == {
        "ready": False,
        "reasons": ["restoring state: partitions 3, 1", "catching up a backlog: partitions 0"],
    }
    assert get(server, "/-/healthy").status_code == 200  # alive all the same
    proc.h = {"status": "ok"}
    proc.extra = ["broker unreachable: no answer"]
    r = get(server, "/-/ready")
    assert (r.status_code, r.json()["reasons"]) == (503, ["broker unreachable: no answer"])


def test_a_degraded_store_is_alive_not_ready_a_stuck_one_is_neither(
    server: ApiServer, proc: Process
) -> None:
    proc.h["status"] = "degraded"
    assert get(server, "/-/ready").json()["reasons"] == ["status degraded"]
    assert get(server, "/-/healthy").status_code == 200
    proc.h["status"] = "stuck"
    r = get(server, "/-/healthy")
    assert (r.status_code, r.json()) == (503, {"status": "unhealthy", "reasons": ["status stuck"]})


def test_verbose_detail_wants_the_token(server: ApiServer) -> None:
    r = get(server, "/-/ready?verbose")
    assert r.status_code == 401 and "secret_looking" not in r.text
    r = get(server, "/-/ready?verbose", headers=AUTH)
    assert r.status_code == 200 and r.json()["health"]["secret_looking"] == "detail"
    assert (
        get(server, "/-/healthy?verbose=1", headers={"Authorization": "Bearer no"}).status_code
        == 401
    )


def test_verbose_open_on_loopback_without_a_token(proc: Process) -> None:
    s = ApiServer(CollectorRegistry(), "127.0.0.1", 0, proc.health).start()
    try:
        assert get(s, "/-/ready?verbose").json()["health"]["status"] == "ok"
    finally:
        s.stop()


def test_reasons_are_bounded() -> None:
    many = readiness_reasons({"status": "x" * 500, "not_ready": ["y" * 1000] * 100})
    assert len(many) == MAX_REASONS + 1 and all(len(r) <= 300 for r in many)
    assert many[-1].startswith("... and ")
    assert readiness_reasons({"restoring": True}) == ["restoring state"]
    assert readiness_reasons({"restoring": [], "catching_up": []}) == []
