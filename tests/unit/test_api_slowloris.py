"""Slow-loris against the project's ApiServer (every process's HTTP, the UI's too), on a
real uvicorn: connections that send nothing, or a header a byte at a time, held their
place for good, and ``max_connections`` of them made every later request a 503."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer


@pytest.fixture
def server() -> Iterator[ApiServer]:
    guard = Guard.for_bind("127.0.0.1", read_timeout_s=1.0)
    s = ApiServer(CollectorRegistry(), "127.0.0.1", 0, guard=guard, max_connections=8).start()
    yield s
    s.stop()


def wait_for(condition: object, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def healthz(s: ApiServer) -> int:
    try:
        return httpx.get("http://{}:{}/healthz".format(*s.address), timeout=5).status_code
    except httpx.HTTPError:
        return 0


def test_idle_connections_are_closed_and_the_server_answers_again(server: ApiServer) -> None:
    idle = [socket.create_connection(server.address) for _ in range(12)]
    half = socket.create_connection(server.address)
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
    try:
        assert wait_for(lambda: healthz(server) == 200), "still refused: idle connections held"
        for sock in [*idle, half]:
            sock.settimeout(30)
            assert sock.recv(1) == b""  # closed by the server, nothing sent
    finally:
        for sock in [*idle, half]:
            sock.close()


def test_a_header_sent_a_byte_at_a_time_is_cut_off(server: ApiServer) -> None:
    sock = socket.create_connection(server.address)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Pad: " + b"a" * 200
    deadline = time.monotonic() + 30
    closed = False
    try:
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() > deadline:
                break
        if not closed:
            sock.settimeout(30)
            closed = sock.recv(1) == b""
        assert closed
    finally:
        sock.close()


def test_a_kept_alive_connection_still_serves_several_requests(server: ApiServer) -> None:
    url = "http://{}:{}".format(*server.address)
    with httpx.Client(base_url=url, timeout=5) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)
