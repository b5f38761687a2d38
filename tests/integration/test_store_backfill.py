"""`monitoring store backfill` on the real broker and chDB: a time range of the store's
topics re-read into the tables, checked against an exact oracle of what was produced,
and idempotent (twice, over stored rows, over a range whose windows were re-emitted
later)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from monitoring.cli import app
from monitoring.config import Settings
from monitoring.ops.backfill import BackfillError, backfill, resolve_topics
from monitoring.runtime.topics import AGGREGATES, SAMPLES, topic_name
from monitoring.sinks.clickhouse.connection import connect
from monitoring.sinks.clickhouse.migrations import migrate
from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration
CODEC = AvroCodec.from_directory()
# record timestamps: two ranges an hour apart, recent (retention and the tables' TTLs)
BASE = (int(time.time() * 1000) - 2 * 3_600_000) // 60_000 * 60_000
T1, T2 = BASE, BASE + 3_600_000
WINDOW = 10_000
AGG_SQL = (
    "SELECT series, toUnixTimestamp64Milli(window_start), count, sum, last, version "
    "FROM aggregates FINAL ORDER BY series, window_start"
)
SAMPLE_SQL = (
    "SELECT series_id, toUnixTimestamp64Milli(ts), value FROM samples FINAL ORDER BY 1, 2, 3"
)

Record = tuple[str, bytes, bytes, int]  # topic, key, value, record timestamp


def aggregate(series: int, window: int, count: int) -> dict[str, Any]:
    start = BASE + window * WINDOW
    return {
        "series": f'req{{i="{series}"}}', "name": "req", "labels": {"i": str(series)},
        "window_ms": WINDOW, "window_start_ms": start, "window_end_ms": start + WINDOW,
        "count": count, "sum": float(count * 2), "min": 1.0, "max": 2.0, "mean": 2.0,
        "last": float(count), "p50": 1.0, "p90": 1.0, "p99": 1.0, "closed_by": "watermark",
    }  # fmt: skip


def records(settings: Settings) -> tuple[list[Record], list[Record]]:
    """Range 1 (timestamps from T1) and range 2 (from T2): samples and aggregates; range
    2 re-emits two of range 1's windows with other values (a later version)."""
    samples, aggregates = (topic_name(settings.kafka, t) for t in (SAMPLES, AGGREGATES))
    first: list[Record] = []
    second: list[Record] = []
    for i in range(12):
        key = f'req{{i="{i}"}}'.encode()
        batch = {
            "source": "t", "series": [key.decode()], "kinds": ["GAUGE"], "units": [""],
            "series_index": [0] * 20, "timestamps_ms": [BASE + 1000 * k for k in range(20)],
            "values": [float(i * 100 + k) for k in range(20)],
        }  # fmt: skip
        first.append((samples, key, CODEC.encode("monitoring.MetricBatch", batch), T1 + i))
        for w in range(3):
            value = CODEC.encode("monitoring.Aggregate", aggregate(i, w, 3 + w))
            first.append((aggregates, key, value, T1 + 100 + i * 3 + w))
            value = CODEC.encode("monitoring.Aggregate", aggregate(i, w + 3, 7 + w))
            second.append((aggregates, key, value, T2 + i * 3 + w))
        late = {**batch, "timestamps_ms": [BASE + 50_000 + k for k in range(20)]}
        second.append((samples, key, CODEC.encode("monitoring.MetricBatch", late), T2 + 50 + i))
    for i in (0, 5):  # windows of range 1 closed again, later, with more data
        key = f'req{{i="{i}"}}'.encode()
        value = CODEC.encode("monitoring.Aggregate", aggregate(i, 1, 99))
        second.append((aggregates, key, value, T2 + 1000 + i))
    return first, second


def oracle(sent: list[Record], settings: Settings) -> tuple[list[tuple[Any, ...]], int]:
    """The aggregates table read with FINAL (highest version per window wins) and the
    number of distinct samples."""
    aggregates = topic_name(settings.kafka, AGGREGATES)
    best: dict[tuple[str, int], tuple[Any, ...]] = {}
    samples: set[tuple[str, int, float]] = set()
    for topic, _, value, ts in sent:
        rec = CODEC.decode(value).record
        if topic == aggregates:
            k = (rec["series"], rec["window_start_ms"])
            row = (*k, rec["count"], rec["sum"], rec["last"], ts)
            if k not in best or best[k][-1] <= ts:
                best[k] = row
        else:
            samples |= {
                (rec["series"][0], t, v)
                for t, v in zip(rec["timestamps_ms"], rec["values"], strict=True)
            }
    return [best[k] for k in sorted(best)], len(samples)


def produce(settings: Settings, recs: list[Record]) -> None:
    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for topic, key, value, ts in recs:
        p.produce(topic, value, key=key, timestamp=ts)
    assert p.flush(30) == 0


@pytest.fixture
def world(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> Iterator[tuple[Settings, Any, list[Record], list[Record]]]:
    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    settings = base.model_copy(update={"storage": storage})
    first, second = records(settings)
    produce(settings, first)
    produce(settings, second)
    client = connect(settings.storage.dsn)
    migrate(client, settings.storage)
    yield settings, client, first, second
    client.close()


def run(settings: Settings, client: Any, from_ms: int, to_ms: int, **kw: Any) -> Any:
    writer = Writer(client, StoreMetrics(CollectorRegistry()))
    return backfill(settings, writer, from_ms, to_ms, timeout_s=120, **kw)


def stored(client: Any) -> tuple[list[tuple[Any, ...]], int]:
    rows = [tuple(r) for r in client.query(AGG_SQL).result_rows]
    n = int(client.query("SELECT count() FROM samples FINAL").result_rows[0][0])
    return rows, n


def test_backfill_a_range_then_all_then_again_matches_the_oracle(world: Any) -> None:
    settings, client, first, second = world
    # range 1 only: the records stamped [T1, T2)
    result = run(settings, client, T1, T2)
    assert result.complete and result.messages == len(first)
    assert stored(client) == oracle(first, settings)
    # everything: range 2's newer versions of two windows replace range 1's
    run(settings, client, 0, T2 + 10_000)
    expected = oracle(first + second, settings)
    assert stored(client) == expected
    assert [r for r in expected[0] if r[2] == 99] and len(expected[0]) == 12 * 6
    samples_before = client.query(SAMPLE_SQL).result_rows
    series_before = client.query("SELECT * FROM series FINAL ORDER BY series_id").result_rows
    # twice, and range 1 again (its older versions): no stored result changes
    run(settings, client, 0, T2 + 10_000)
    run(settings, client, T1, T2)
    assert stored(client) == expected
    assert client.query(SAMPLE_SQL).result_rows == samples_before
    assert client.query("SELECT * FROM series FINAL ORDER BY series_id").result_rows == (
        series_before
    )
    # the raw rows were written again (that is what FINAL collapses)
    raw = int(client.query("SELECT count() FROM aggregates").result_rows[0][0])
    assert raw > len(expected[0])


def test_backfill_one_topic_and_an_empty_range(world: Any) -> None:
    settings, client, first, _ = world
    result = run(settings, client, T1, T2, topics=["metrics.aggregates"])
    assert result.messages == sum(1 for r in first if "aggregates" in r[0])
    rows, samples = stored(client)
    assert samples == 0 and rows == oracle(first, settings)[0]
    empty = run(settings, client, T2 + 60_000, T2 + 120_000)
    assert empty.complete and empty.messages == 0 and not empty.as_dict()["ranges"]
    with pytest.raises(BackfillError, match="not a topic the store reads"):
        resolve_topics(settings, ["alerts.state"])
    with pytest.raises(BackfillError, match="--to must be after --from"):
        run(settings, client, T2, T1)


def test_backfill_cli(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, client, first, second = world
    client.close()  # the command opens the chDB directory itself
    k = settings.kafka
    monkeypatch.setenv("MONITORING_KAFKA__BOOTSTRAP_SERVERS", k.bootstrap_servers)
    monkeypatch.setenv("MONITORING_KAFKA__TOPIC_PREFIX", k.topic_prefix)
    monkeypatch.setenv("MONITORING_STORAGE__DSN", settings.storage.dsn)
    args = ["store", "backfill", "--from", str(T1), "--to", "now", "--json"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["complete"] and summary["messages"] == len(first) + len(second)
    assert summary["rows"]["aggregates"] == sum(1 for r in first + second if "aggr" in r[0])
    bad = CliRunner().invoke(app, ["store", "backfill", "--from", "yesterday-ish"])
    assert bad.exit_code == 2 and "invalid time" in bad.output
    again = connect(settings.storage.dsn)
    try:
        assert stored(again) == oracle(first + second, settings)
    finally:
        again.close()
