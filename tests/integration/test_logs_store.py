"""Stored logs in a real embedded ClickHouse (chDB), no Kafka: idempotent ingest of the
log agent's outputs, retention, and the SQL of `monitoring logs search` / `top`
checked against the same filters computed in Python."""

from __future__ import annotations

import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from fixtures.store import StoreMessage
from prometheus_client import CollectorRegistry

from monitoring.agents.log_processing import LogProcessor
from monitoring.cli.logs import growth_sql, search_sql, tokens, top_sql, where_clause
from monitoring.config import Settings
from monitoring.logs.analyzer import PartitionLogs
from monitoring.logs.corpus import Line, generate
from monitoring.sinks.clickhouse.migrations import apply_retention
from monitoring.sinks.clickhouse.store import Store
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec
from monitoring.wire.log_encoding import LOG_RECORD

pytestmark = [pytest.mark.integration]
CODEC = AvroCodec.from_directory()
NOW = int(time.time() * 1000)
START = NOW - 3_600_000


def outputs(lines: list[Line]) -> tuple[list[bytes], dict[tuple[str, int], int]]:
    """The log agent's stored and template records for ``lines`` (partition 0)."""
    proc, part = LogProcessor(CODEC, 6), PartitionLogs()
    out, tid = [], {}
    for offset, ln in enumerate(lines):
        enc = proc.handle(part, 0, offset, CODEC.encode(LOG_RECORD, ln.record), NOW)
        assert enc is not None
        out.append(enc.stored[1])
        out += [v for _, v in enc.templates]
        tid[(ln.record["service"], offset)] = CODEC.decode(enc.stored[1]).record["template_id"]
    return out, tid


def ingest(chdb_settings: Settings, chdb_client: Any, values: list[bytes]) -> None:
    store = Store(
        chdb_settings, Writer(chdb_client, StoreMetrics(CollectorRegistry())), None, CODEC
    )
    for v in values:
        store.handle(StoreMessage(v, NOW))
    store.flush_and_commit()


def q(chdb_client: Any, sql: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in chdb_client.query(sql).result_rows]


LINES = generate(2_000, seed=5, start_ms=START, step_ms=1_500)


def test_replayed_outputs_collapse(chdb_settings: Settings, chdb_client: Any) -> None:
    values, _ = outputs(LINES)
    ingest(chdb_settings, chdb_client, values)
    ingest(chdb_settings, chdb_client, values[:700])  # a crash between insert and commit, replayed
    assert q(chdb_client, "SELECT count() FROM logs FINAL") == [(2_000,)]
    # search shows a replayed line once, without FINAL (the duplicates sit in other parts)
    assert q(chdb_client, "SELECT count() FROM logs")[0][0] > 2_000
    shown = q(chdb_client, search_sql(where_clause(), 100_000))
    assert len(shown) == len({(r[1], r[9]) for r in shown}) == 2_000
    n_templates = q(chdb_client, "SELECT count() FROM log_templates FINAL")[0][0]
    assert n_templates == len({(ln.record["service"], ln.template) for ln in LINES})


def test_retention_ttl_follows_settings(chdb_settings: Settings, chdb_client: Any) -> None:
    ddl = q(chdb_client, "SELECT create_table_query FROM system.tables WHERE name = 'logs'")[0][0]
    assert f"toIntervalSecond({14 * 86_400})" in ddl and "tokenbf_v1" in ddl
    retention = chdb_settings.storage.retention.model_copy(update={"logs": timedelta(days=3)})
    storage = chdb_settings.storage.model_copy(update={"retention": retention})
    assert "logs" in apply_retention(chdb_client, storage)
    ddl = q(chdb_client, "SELECT create_table_query FROM system.tables WHERE name = 'logs'")[0][0]
    assert f"toIntervalSecond({3 * 86_400})" in ddl


def test_search_and_top_sql_against_python(chdb_settings: Settings, chdb_client: Any) -> None:
    values, tid = outputs(LINES)
    ingest(chdb_settings, chdb_client, values)

    def matches(
        ln: Line, text: str, service: str | None, min_sev: int, since: int, region: str | None
    ) -> bool:
        r = ln.record
        sev = {"DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}[ln.level]
        words = set(tokens(r["message"]))
        return (
            all(t in words for t in tokens(text))
            and (service is None or r["service"] == service)
            and sev >= min_sev
            and r["timestamp_ms"] >= since
            and (region is None or r["attributes"]["region"] == region)
        )

    cases = [
        ("failed to charge", None, None, 0, None),
        ("logged", "auth", None, 0, "eu"),
        ("", "billing", "ERROR", 17, None),
        ("connection", None, "debug", 5, None),
    ]
    for text, service, level, min_sev, region in cases:
        since = START + 1_200_000
        where = where_clause(
            text, service, level, since, None, [f"region={region}"] if region else None
        )
        got = q(chdb_client, search_sql(where, 10_000))
        want = [ln for ln in LINES if matches(ln, text, service, min_sev, since, region)]
        assert want, text
        assert [r[0] for r in got] == sorted(
            (ln.record["timestamp_ms"] for ln in want), reverse=True
        )
        assert all(
            r[1] == ln.record["service"]
            for r, ln in zip(
                got, sorted(want, key=lambda x: -x.record["timestamp_ms"]), strict=True
            )
        )
    # top templates by count over the whole range
    rows = q(chdb_client, top_sql(where_clause(since_ms=START), 5))
    truth = Counter(
        (ln.record["service"], tid[(ln.record["service"], i)]) for i, ln in enumerate(LINES)
    )
    assert [(r[0], r[1], r[2]) for r in rows] == [
        (s, t, n) for (s, t), n in sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    ]
    assert all(r[3] for r in rows)  # template text joined in


def test_growth_ranks_a_burst_first(chdb_settings: Settings, chdb_client: Any) -> None:
    now = NOW - NOW % 1000
    base = [generate(1, seed=i, start_ms=now - 3_000_000 + i * 10_000)[0] for i in range(290)]
    burst_rec = {
        "service": "api",
        "host": "h",
        "level": "error",
        "logger": "l",
        "message": "disk quota exceeded on volume 7",
        "trace_id": "",
        "span_id": "",
        "exception": "",
        "attributes": {},
    }
    burst = [
        Line({**burst_rec, "timestamp_ms": now - 60_000 + i * 100}, -1, "ERROR") for i in range(50)
    ]
    values, _ = outputs(base + burst)
    ingest(chdb_settings, chdb_client, values)
    rows = q(chdb_client, growth_sql("1", now + 1, 600_000, 2_400_000, 3))
    service, _, current, baseline, growth, template = rows[0]
    assert (service, current, baseline, growth) == ("api", 50, 0.0, 51.0)
    assert template == "disk quota exceeded on volume <:N:>"
