"""The read-only gate follows its user (issue 13, finding 1, found in the audit): a
ClickHouse server's ``readonly=2`` user, what docs/security.md asks ``storage.query_dsn``
to be, may set the query limits but not ``readonly`` itself, even to 1, so a gate that
always sent ``readonly=1`` failed every query there; with chDB or an unrestricted user
``readonly=1`` comes last as before. (The engine itself: tests/integration/
test_query_read_only_http_dsn.py.)"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from monitoring.config import QueryLimits
from monitoring.query.clickhouse_exec import ChRequest, Executor, Result
from monitoring.sinks.clickhouse.read_only import ReadOnlyQueries


class Engine:
    """A client or an engine that answers ``getSetting('readonly')`` and records the rest."""

    def __init__(self, readonly: int | Exception) -> None:
        self.readonly = readonly
        self.asked = 0
        self.ran: list[dict[str, str]] = []

    def query(self, sql: str, **_: Any) -> Any:
        if "getSetting('readonly')" in sql:
            self.asked += 1
            if isinstance(self.readonly, Exception):
                raise self.readonly
            return SimpleNamespace(result_rows=[(self.readonly,)])
        return SimpleNamespace(result_rows=[("26.9", "UTC", "default")])

    def run(self, text: str, settings: dict[str, str], fmt: str, request: ChRequest) -> Result:
        self.ran.append(settings)
        return Result(b"1\n", fmt, {})

    def close(self) -> None:
        pass


@pytest.mark.parametrize(("level", "sends_readonly"), [(0, True), (1, False), (2, False)])
def test_the_gate_sends_readonly_only_to_a_user_that_is_not_read_only(
    level: int, sends_readonly: bool
) -> None:
    client = Engine(level)
    gate = ReadOnlyQueries(client, QueryLimits())  # type: ignore[arg-type]
    assert ("readonly" in gate.settings) is sends_readonly
    assert gate.settings["max_execution_time"] == 30 and client.asked == 1  # asked once
    if sends_readonly:
        assert list(gate.settings)[-1] == "readonly"  # last: nothing changes after it


def test_an_engine_that_does_not_answer_is_asked_again() -> None:
    client = Engine(ConnectionError("down"))
    gate = ReadOnlyQueries(client, QueryLimits())  # type: ignore[arg-type]
    assert gate.settings["readonly"] == 1
    client.readonly = 2
    assert "readonly" not in gate.settings and client.asked == 2


@pytest.mark.parametrize("level", [0, 2])
def test_the_clickhouse_interface_forwards_what_the_user_may_set(level: int) -> None:
    client = Engine(level)
    limits = QueryLimits()
    queries = ReadOnlyQueries(client, limits)  # type: ignore[arg-type]
    queries.canonical = lambda sql, parameters=None: sql  # type: ignore[method-assign]
    server = SimpleNamespace(limits=limits, client=client, queries=queries, queued=lambda f: f())
    executor = Executor(server)  # type: ignore[arg-type]
    executor._engine = client
    executor.run("SELECT 1", ChRequest())
    [sent] = client.ran
    assert ("readonly" in sent) is (level == 0)
    assert sent["max_result_rows"] == str(limits.max_result_rows)
