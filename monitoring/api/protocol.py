"""uvicorn's h11 protocol with a deadline on each request's head (slow-loris).

uvicorn times out only an idle kept-alive connection (``timeout_keep_alive``, between
requests, and only until its first byte arrives): a client that connects and sends
nothing, or a header line a byte at a time, holds its connection for good, and
``limit_concurrency`` connections of them make every later request a 503. Here a
request's head (request line and headers) must be complete within ``head_timeout_s``
of the connection, or of the first byte after the previous response; otherwise the
connection is closed. Bodies are bounded by the :class:`~monitoring.api.guard.Guard`'s
read timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_TIMEOUT_S = 10.0


class HeadTimeoutH11Protocol(H11Protocol):
    """:class:`H11Protocol` closing a connection whose request head is not complete
    within ``head_timeout_s``."""

    head_timeout_s = HEAD_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        waiting = self.conn.their_state is h11.IDLE
        if waiting and self._head_timer is None:
            self._arm()  # the first bytes of the next request on a kept-alive connection
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm()  # the head is complete (or the connection is done)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def with_head_timeout(seconds: float) -> type[HeadTimeoutH11Protocol]:
    """The protocol class with its own ``head_timeout_s`` (for uvicorn's ``http=``)."""
    return type("HeadTimeoutH11", (HeadTimeoutH11Protocol,), {"head_timeout_s": seconds})
