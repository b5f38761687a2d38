"""The façades' edge to a running pipeline: the store's query endpoint (reads) and the
aggregates topic (writes). Reads go through ``StoreClient`` (ClickHouse's HTTP
interface on the store's port, with ``api.token``); nothing here opens chDB."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.query.client import StoreClient, store_url

_STATS = ("sum", "min", "max", "mean", "last", "p50", "p90", "p99")
CHUNK = 400  # ids or names per query: the parameters travel in the URL

_AGG_SQL = """
SELECT series, name, labels, window_ms, toUnixTimestamp64Milli(window_start),
       toUnixTimestamp64Milli(window_end), count, sum, min, max, mean, last, p50, p90, p99,
       closed_by, first, increase, resets
FROM aggregates FINAL
WHERE name IN {names:Array(String)} AND window_ms IN {windows:Array(UInt32)}
  AND window_start >= fromUnixTimestamp64Milli({lo:Int64})
  AND window_start <= fromUnixTimestamp64Milli({hi:Int64})
"""


def client(settings: Settings) -> StoreClient:
    """A client of the running store (``storage.query_host:query_port``)."""
    return StoreClient(store_url(settings), settings.api.token.get_secret_value(), 60.0)


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)


def read_aggregates(settings: Settings, keys: Iterable[tuple[str, int, int]]) -> list[Aggregate]:
    """The stored windows among ``keys`` (series key, window_ms, window start)."""
    from monitoring.metrics.samples import parse_series_key

    wanted = set(keys)
    if not wanted:
        return []
    names = sorted({parse_series_key(k[0])[0] for k in wanted})
    windows = sorted({k[1] for k in wanted})
    lo = min(k[2] for k in wanted)
    hi = max(k[2] for k in wanted)
    out: list[Aggregate] = []
    with client(settings) as c:
        for part in _chunks(names):
            table = c.sql(_AGG_SQL, {"names": part, "windows": windows, "lo": lo, "hi": hi})
            for r in table.rows:
                key = (str(r[0]), int(r[3]), int(r[4]))
                if key not in wanted:
                    continue
                stats = dict(zip(_STATS, (_float(v) for v in r[7:15]), strict=True))
                out.append(
                    Aggregate(
                        series=str(r[0]),
                        name=str(r[1]),
                        labels=dict(r[2]),
                        window_ms=int(r[3]),
                        window_start_ms=int(r[4]),
                        window_end_ms=int(r[5]),
                        count=int(r[6]),
                        closed_by=str(r[15]),
                        first=None if r[16] is None else float(r[16]),
                        increase=None if r[17] is None else float(r[17]),
                        resets=None if r[18] is None else int(r[18]),
                        **stats,
                    )
                )
    return out


def stored_samples(settings: Settings, samples: Iterable[tuple[str, int]]) -> int:
    """How many of ``samples`` (series key, timestamp_ms) the samples table holds."""
    from monitoring.sinks.clickhouse.rows import series_id

    wanted: dict[int, set[int]] = {}
    for key, ts in samples:
        wanted.setdefault(series_id(key), set()).add(ts)
    if not wanted:
        return 0
    lo = min(min(t) for t in wanted.values())
    hi = max(max(t) for t in wanted.values())
    found = 0
    with client(settings) as c:
        for part in _chunks(sorted(wanted)):
            table = c.sql(
                "SELECT series_id, toUnixTimestamp64Milli(ts) FROM samples FINAL "
                "WHERE series_id IN {ids:Array(UInt64)} AND ts >= fromUnixTimestamp64Milli"
                "({lo:Int64}) AND ts <= fromUnixTimestamp64Milli({hi:Int64})",
                {"ids": part, "lo": lo, "hi": hi},
            )
            found += sum(1 for sid, ts in table.rows if int(ts) in wanted.get(int(sid), ()))
    return found


def produce_aggregates(settings: Settings, aggregates: Iterable[Aggregate]) -> int:
    """Send ``aggregates`` to the aggregates topic (key: the series, as the worker does);
    the number acknowledged. The store writes them; replays collapse on their keys."""
    from confluent_kafka import Producer

    from monitoring.runtime.kafka_client import client_config
    from monitoring.runtime.topics import AGGREGATES, topic_name
    from monitoring.wire.aggregate_encoding import AggregateEncoder
    from monitoring.wire.codec import AvroCodec

    items = list(aggregates)
    if not items:
        return 0
    encoder = AggregateEncoder(AvroCodec.from_directory())
    topic = topic_name(settings.kafka, AGGREGATES)
    acked: list[int] = []
    errors: list[str] = []

    def done(err: Any, _msg: Any) -> None:
        if err is None:
            acked.append(1)
        else:
            errors.append(str(err))

    producer = Producer(
        client_config(
            settings.kafka,
            **{
                "partitioner": "murmur2_random",
                "enable.idempotence": True,
                "acks": "all",
                "client.id": "monitoring-python-api",
            },
        )
    )
    for a, value in zip(items, encoder.encode_all(items), strict=True):
        producer.produce(topic, value, a.series.encode(), on_delivery=done)
        producer.poll(0)
    left = producer.flush(30)
    if left or errors:
        raise RuntimeError(
            f"{left + len(errors)} of {len(items)} aggregates not acknowledged by Kafka"
            + (f": {errors[0]}" if errors else "")
        )
    return len(acked)
