"""A receiver that answers an endless error body cannot flood the notifier: only the
head of its answer is read, and the connection is dropped (a real socket on loopback)."""

from __future__ import annotations

import socket
import threading

import httpx
import pytest

from monitoring.sinks.notifiers.base import (
    MAX_ERROR_CHARS,
    MAX_RESPONSE_BYTES,
    Context,
    DeliveryError,
    post_json,
)

LIMIT = 512 * 1024 * 1024  # what the hostile receiver would send at most


def flooding_receiver() -> tuple[int, dict[str, int], threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))
    sent = {"bytes": 0}

    def serve() -> None:
        conn, _ = srv.accept()
        with conn, srv:
            conn.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            conn.sendall(
                b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            try:
                while sent["bytes"] < LIMIT:
                    conn.sendall(chunk)
                    sent["bytes"] += 65536
            except OSError:
                pass  # the client went away: what we want

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname()[1], sent, t


async def test_an_endless_error_body_is_cut_off() -> None:
    port, sent, thread = flooding_receiver()
    async with httpx.AsyncClient() as http:
        with pytest.raises(DeliveryError) as info:
            await post_json(Context(http, timeout_s=10), f"http://127.0.0.1:{port}/", {"a": 1})
    thread.join(30)
    assert not thread.is_alive()
    assert info.value.status == 500 and info.value.retryable
    assert len(str(info.value)) <= MAX_ERROR_CHARS + 20
    assert sent["bytes"] < LIMIT  # the server saw the connection close long before
    print(f"receiver sent {sent['bytes']} bytes before the notifier hung up "
          f"(head kept: {MAX_RESPONSE_BYTES})")  # fmt: skip
