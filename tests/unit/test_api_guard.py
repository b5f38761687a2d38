"""The HTTP guard in-process, against a real uvicorn server on loopback: token, Host and
Origin checks, JSON content type, body limits and slow clients."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitoring.api.guard import Guard
from monitoring.api.server import ApiServer, serve
from monitoring.config import ApiSettings, ConfigError

TOKEN = "t0ken-for-tests"


def echo(body: bytes) -> tuple[int, Any]:
    return 200, {"bytes": len(body)}


def boom() -> tuple[int, Any]:
    raise RuntimeError("secret detail")


@pytest.fixture
def server() -> Iterator[ApiServer]:
    guard = Guard.for_bind("127.0.0.1", token=TOKEN, max_body_bytes=1024, read_timeout_s=0.5)
    s = ApiServer(
        CollectorRegistry(), "127.0.0.1", 0, routes={"/echo": echo},
        get_routes={"/boom": boom}, guard=guard,
    ).start()  # fmt: skip
    yield s
    s.stop()


def url(s: ApiServer, path: str) -> str:
    return "http://{}:{}{}".format(*s.address, path)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_token_required_except_healthz(server: ApiServer) -> None:
    assert httpx.get(url(server, "/healthz")).status_code == 200
    assert httpx.get(url(server, "/metrics")).status_code == 401
    assert (
        httpx.get(url(server, "/metrics"), headers={"Authorization": "Bearer nope"}).status_code
        == 401
    )
    assert httpx.get(url(server, "/metrics"), headers={"Authorization": TOKEN}).status_code == 401
    assert httpx.get(url(server, "/metrics"), headers=AUTH).status_code == 200
    r = httpx.post(url(server, "/echo"), json={"a": 1}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"bytes": len(b'{"a":1}')}


def test_foreign_host_and_origin_refused(server: ApiServer) -> None:
    """DNS rebinding (a foreign Host) and cross-site requests (a foreign Origin)."""
    r = httpx.get(url(server, "/metrics"), headers={**AUTH, "Host": "evil.example"})
    assert r.status_code == 421
    for origin in ("http://evil.example", "null", "http://127.0.0.1.evil.example"):
        r = httpx.post(url(server, "/echo"), json={}, headers={**AUTH, "Origin": origin})
        assert r.status_code == 403, origin
    same = f"http://127.0.0.1:{server.address[1]}"
    assert (
        httpx.post(url(server, "/echo"), json={}, headers={**AUTH, "Origin": same}).status_code
        == 200
    )


def test_json_routes_want_json(server: ApiServer) -> None:
    """A cross-site form can send text/plain without a preflight; JSON it cannot."""
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        r = httpx.post(url(server, "/echo"), content=b"{}", headers={**AUTH, "Content-Type": ctype})
        assert r.status_code == 415, ctype


def test_bodies_are_bounded(server: ApiServer) -> None:
    r = httpx.post(url(server, "/echo"), content=b"x" * 2000,
                   headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"x" * 500

    r = httpx.post(url(server, "/echo"), content=chunks(),
                   headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 413


def raw(server: ApiServer, request: bytes, send_all: bool = True) -> bytes:
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(request)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


@pytest.mark.parametrize("length", [b"-1", b"abc", b"1e3", b"+5", b"99999999999999999999"])
def test_bad_content_length_refused(server: ApiServer, length: bytes) -> None:
    req = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: " + length
           + b"\r\nConnection: close\r\n\r\n{}")  # fmt: skip
    status = raw(server, req).split(b"\r\n", 1)[0]
    assert status.split()[1] in (b"400", b"413"), status


def test_slow_body_times_out(server: ApiServer) -> None:
    """A client that announces a body and never sends it is cut off."""
    req = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
           b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 100\r\n"
           b"Connection: close\r\n\r\n{")  # fmt: skip
    assert raw(server, req).split(b"\r\n", 1)[0].split()[1] == b"408"


def test_route_errors_do_not_leak(server: ApiServer) -> None:
    r = httpx.get(url(server, "/boom"), headers=AUTH)
    assert r.status_code == 500 and "secret" not in r.text


def test_open_off_loopback_refused() -> None:
    with pytest.raises(ConfigError, match=r"api\.token"):
        Guard.for_bind("0.0.0.0")
    with pytest.raises(ConfigError, match=r"api\.token"):
        serve(ApiSettings(), CollectorRegistry(), "0.0.0.0", 0)


def test_off_loopback_with_token_and_allowed_hosts() -> None:
    g = Guard.for_bind("0.0.0.0", token=TOKEN, allowed_hosts=["mon.internal"])
    assert g.host_allowed("mon.internal:9094") and g.host_allowed("127.0.0.1")
    assert not g.host_allowed("evil.example")
    assert Guard.for_bind("0.0.0.0", token=TOKEN).host_allowed("anything")


def test_no_token_on_loopback_is_open_but_host_checked() -> None:
    s = ApiServer(CollectorRegistry(), "127.0.0.1", 0).start()
    try:
        assert httpx.get(url(s, "/metrics")).status_code == 200
        assert httpx.get(url(s, "/metrics"), headers={"Host": "rebound.example"}).status_code == 421
    finally:
        s.stop()


def test_taken_port_raises_oserror(server: ApiServer) -> None:
    with pytest.raises(OSError):
        ApiServer(CollectorRegistry(), "127.0.0.1", server.address[1])


def test_accepted_connections_do_not_wait_for_delayed_acks(server: ApiServer) -> None:
    """A kept-alive connection's response is written as headers then body: without
    TCP_NODELAY on the accepted socket the body waits for the client's delayed ACK (40 ms
    per request on Linux, what Grafana's and promtool's kept-alive clients would pay)."""
    host, port = server.address
    with socket.create_connection((host, port)) as client:
        for _ in range(2):  # the second request is the kept-alive case
            client.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            data = b""
            while not data.endswith(b"}"):
                data += client.recv(4096)
            assert data.startswith(b"HTTP/1.1 200")
        sockets = [
            conn.transport.get_extra_info("socket")
            for conn in server.server.server_state.connections
        ]
        assert sockets, "the server holds the kept-alive connection"
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in sockets)
