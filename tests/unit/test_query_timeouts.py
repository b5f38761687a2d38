"""Clients of users' queries give up after the query limits, not after
clickhouse-connect's 300 s (issue 13, finding 12): the read-only client of an http
DSN, and the CLI's request to a running store."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from clickhouse_connect.driver.exceptions import OperationalError

from monitoring.cli import query as query_cli
from monitoring.config import QueryLimits, Settings
from monitoring.sinks.clickhouse.connection import connect_read_only, read_only_timeout_s


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for s in accepted:
        s.close()


def test_the_read_only_client_gives_up_after_the_query_timeout(silent_server: int) -> None:
    limits = QueryLimits(timeout=timedelta(seconds=1))
    assert read_only_timeout_s(limits) == 6
    started = time.monotonic()
    with pytest.raises(OperationalError, match="timed out"):
        connect_read_only(f"http://u:pw@127.0.0.1:{silent_server}/", limits)
    assert time.monotonic() - started < 20  # 300 s before


def test_the_cli_waits_for_a_slot_and_the_query_then_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}

    def fake_query_store(host: str, port: int, sql: str, timeout: float, token: str) -> None:
        seen["timeout"] = timeout

    monkeypatch.setattr(query_cli, "query_store", fake_query_store)
    settings = Settings.load(None)
    st = settings.storage.model_copy(update={"query": QueryLimits(timeout=timedelta(minutes=2))})
    query_cli.via_store(settings.model_copy(update={"storage": st}), "SELECT 1")
    assert seen["timeout"] == 120 + 125  # a slot within the timeout, the query, a margin
