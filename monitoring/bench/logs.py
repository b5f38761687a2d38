"""``monitoring bench logs``: the log path's four numbers, measured.

1. **lines/s per core** through the log agent's pure path (``LogProcessor.handle``:
   Avro decode, normalise, drain3 mining, counting, StoredLog/StoredLogBatch encode),
   over a generated corpus (5 services x 3 hosts, 60 templates, tracebacks), per
   CPU-second of the process (``time.process_time``), so other load on the machine
   does not count. The headline is the corpus shipped as ``LogShipper`` does for a
   busy source, ``LogBatch`` messages of 256 lines; single ``LogRecord`` messages and
   batches of 16 and 64 are measured too;
2. **handler overhead per call** (µs): CPU time of the calling thread
   (``time.thread_time``) for ``logger.info(...)`` with the ``KafkaLogHandler`` minus
   the same call with no handler, while the shipper really sends to the broker;
3. **token search over 10 M lines** (ms): 10 M rows generated straight into a chDB
   ``logs`` table (``INSERT ... SELECT ... FROM numbers()``: 20 services, 60 message
   shapes with variable numbers, IPs and hex ids, tracebacks on half the errors,
   a week of timestamps; one line in 100,000 holds the token ``zebracorn``), then
   ``monitoring logs search zebracorn`` 's SQL (newest first, LIMIT 50):
   median of 5 runs after one warm-up;
4. **bytes on disk per stored line**: active parts' bytes (data, marks, primary and
   skip indexes) / rows;
5. (shown, not in the last line) a real ``monitoring worker``, every agent running,
   working off a backlog of 256-line batches on the broker: lines per second of wall
   time and per CPU-second of the worker process (``--worker-lines 0`` skips it).

The last line printed is ``lines_per_s=<n> handler_us=<n> search_10m_ms=<n>
bytes_per_line=<n>`` (``nan`` for the last two with ``--rows 0``, which skips phases 3
and 4).
"""

from __future__ import annotations

import logging
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.agents.log_processing import LogProcessor
from monitoring.config import KafkaSettings
from monitoring.logs.analyzer import PartitionLogs
from monitoring.logs.corpus import generate
from monitoring.runtime.kafka_client import client_config
from monitoring.wire.codec import AvroCodec
from monitoring.wire.log_batch import LogBatchEncoder
from monitoring.wire.log_encoding import LOG_RECORD

RARE_TOKEN = "zebracorn"


@dataclass
class LogBench:
    calibration_ns: float = 0.0
    lines_per_s: float = 0.0  # LogBatch messages of BATCH_SIZES[-1] lines
    single_lines_per_s: float = 0.0  # one LogRecord per message
    batched_lines_per_s: dict[int, float] = field(default_factory=dict)
    domain_lines_per_s: float = 0.0
    decode_us: float = 0.0
    batch_decode_us: float = 0.0
    handler_us: float = 0.0
    handler_call_us: float = 0.0
    bare_call_us: float = 0.0
    worker_lines: int = 0
    worker_lines_per_s: float = float("nan")  # wall; nan: worker phase skipped
    worker_lines_per_cpu_s: float = float("nan")
    search_ms: float = float("nan")  # nan: search phase skipped
    search_service_ms: float = 0.0
    matches: int = 0
    rows: int = 0
    insert_s: float = 0.0
    bytes_per_line: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)

    def summary_line(self) -> str:
        return (
            f"lines_per_s={self.lines_per_s:.0f} handler_us={self.handler_us:.2f} "
            f"search_10m_ms={self.search_ms:.0f} bytes_per_line={self.bytes_per_line:.1f}"
        )


def calibration_ns(n: int = 1_000_000) -> float:
    """CPU ns of one dict get-and-set loop iteration: how busy/fast the machine is now
    (BENCHMARKS.md quotes about 170 ns for this machine when quiet)."""
    d: dict[int, int] = {}
    t0 = time.process_time()
    for i in range(n):
        d[i & 1023] = d.get(i & 1023, 0) + 1
    return (time.process_time() - t0) / n * 1e9


BATCH_SIZES = (16, 64, 256)  # 256: LogShipper's default batch_lines


def shipped_batches(
    records: list[dict[str, Any]], batch_lines: int, codec: AvroCodec
) -> list[bytes]:
    """The corpus as ``LogShipper`` batches it: consecutive lines of one service and
    host (one shipping process each), at most ``batch_lines`` a message, in order of
    each batch's first line."""
    open_: dict[tuple[str, str], list[dict[str, Any]]] = {}
    batches: list[list[dict[str, Any]]] = []
    for r in records:
        key = (r["service"], r["host"])
        cur = open_.get(key)
        if cur is None or len(cur) >= batch_lines:
            cur = open_[key] = []
            batches.append(cur)
        cur.append(r)
    enc = LogBatchEncoder(codec)
    fields = ("timestamp_ms", "level", "logger", "message", "trace_id", "span_id", "exception",
              "attributes")  # fmt: skip
    return [
        enc.encode(b[0]["service"], b[0]["host"], [tuple(r[f] for f in fields) for r in b])
        for b in batches
    ]


def _per_cpu_s(lines: int, values: list[bytes], proc: LogProcessor, rounds: int) -> float:
    """Lines per CPU-second through ``LogProcessor.handle``, best of ``rounds``."""
    best = 0.0
    for _ in range(rounds):
        part, handle = PartitionLogs(), proc.handle
        t0 = time.process_time()
        for offset, v in enumerate(values):
            handle(part, 0, offset, v, 1_700_000_000_000)
        best = max(best, lines / (time.process_time() - t0))
    return best


def agent_path(n_lines: int, rounds: int = 3) -> dict[str, Any]:
    """Lines per CPU-second through ``LogProcessor.handle`` (bytes in, bytes out): as
    single ``LogRecord`` messages and as ``LogBatch`` messages of each of
    ``BATCH_SIZES``; µs per line of the Avro decode alone (both contracts); lines per
    CPU-second of the domain alone (``PartitionLogs.process`` on decoded records). Best
    of ``rounds``: other processes share the cores."""
    codec = AvroCodec.from_directory()
    records = [ln.record for ln in generate(n_lines, seed=3)]
    values = [codec.encode(LOG_RECORD, r) for r in records]
    proc = LogProcessor(codec, KafkaSettings().samples_partitions)
    out: dict[str, Any] = {"single": _per_cpu_s(n_lines, values, proc, rounds), "batched": {}}
    for size in BATCH_SIZES:
        batches = shipped_batches(records, size, codec)
        out["batched"][size] = _per_cpu_s(n_lines, batches, proc, rounds)
    decode, decode_batch = proc.decoder.decode, proc.batches.decode
    decoded = [decode(v).record for v in values]
    domain = 0.0
    decode_us = batch_decode_us = float("inf")
    for _ in range(rounds):
        part = PartitionLogs()
        process = part.process
        t0 = time.process_time()
        for offset, r in enumerate(decoded):
            process(offset, r, 1_700_000_000_000)
        domain = max(domain, n_lines / (time.process_time() - t0))
        t0 = time.process_time()
        for v in values:
            decode(v)
        decode_us = min(decode_us, (time.process_time() - t0) / n_lines * 1e6)
        t0 = time.process_time()
        for v in batches:
            decode_batch(v)
        batch_decode_us = min(batch_decode_us, (time.process_time() - t0) / n_lines * 1e6)
    out.update(domain=domain, decode_us=decode_us, batch_decode_us=batch_decode_us)
    return out


def handler_overhead(bootstrap: str, calls: int) -> tuple[float, float]:
    """(µs per logger call with the Kafka handler, µs without any handler)."""
    from confluent_kafka.admin import AdminClient, NewTopic
    from prometheus_client import CollectorRegistry

    from monitoring.sdk.log_shipping import KafkaLogHandler, LogShipper

    topic = f"bench-logs-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(client_config(bootstrap))
    admin.create_topics([NewTopic(topic, 6, 1)])[topic].result(30)
    shipper = LogShipper(bootstrap, topic, "bench", buffer_size=calls,
                         max_in_flight=10_000, registry=CollectorRegistry())  # fmt: skip
    try:
        logger = logging.getLogger(f"bench.logs.{topic}")
        logger.propagate = False
        logger.setLevel(logging.INFO)

        def timed() -> float:
            t0 = time.thread_time()
            for i in range(calls):
                logger.info("request %s finished in %d ms", "r-17", i)
            return (time.thread_time() - t0) / calls * 1e6

        handler = KafkaLogHandler(shipper)
        logger.addHandler(handler)
        with_handler = min(timed() for _ in range(3))
        logger.removeHandler(handler)
        bare = min(timed() for _ in range(3))
        shipper.flush(60)
    finally:
        shipper.close(30)
        admin.delete_topics([topic])
    return with_handler, bare


GENERATE_SQL = """
INSERT INTO logs
SELECT
    concat('svc', toString(number % 20)) AS service,
    fromUnixTimestamp64Milli(toInt64({start} + intDiv(number * {span}, {n})), 'UTC') AS timestamp,
    number AS event_id,
    timestamp AS observed,
    concat(service, '-', toString(cityHash64(number, 1) % 8)) AS host,
    arrayElement(['DEBUG', 'INFO', 'INFO', 'INFO', 'INFO', 'INFO', 'WARN', 'ERROR'],
                 cityHash64(number, 2) % 8 + 1) AS level,
    transform(level, ['DEBUG', 'INFO', 'WARN', 'ERROR'], [5, 9, 13, 17], 9) AS severity,
    concat(service, '.handlers') AS logger,
    concat(
        arrayElement(['request', 'user', 'cache', 'job', 'query', 'upstream', 'invoice',
                      'session', 'worker', 'config', 'payment', 'index'],
                     cityHash64(number, 3) % 12 + 1), ' ',
        toString(cityHash64(number, 4) % 10000000), ' ',
        arrayElement(['completed in', 'failed after', 'retried after', 'timed out after',
                      'scheduled in'], cityHash64(number, 5) % 5 + 1), ' ',
        toString(cityHash64(number, 6) % 5000), ' ms from ',
        IPv4NumToString(toUInt32(cityHash64(number, 7) % 4294967296)), ' key ',
        lower(hex(cityHash64(number, 8) % 281474976710656)),
        if(number % 100000 = 7, ' {rare}', '')
    ) AS message,
    if(number % 3 = 0, lower(hex(sipHash128(number))), '') AS trace_id,
    '' AS span_id,
    if(level = 'ERROR' AND number % 2 = 0,
       concat('Traceback (most recent call last):\\n  File "/app/svc/handler.py", line ',
              toString(number % 900), ', in handle\\nConnectionError: peer reset'), '')
        AS exception,
    map('region', if(number % 2 = 0, 'eu', 'us')) AS attributes,
    toUInt32(cityHash64(number, 3) % 12 * 5 + cityHash64(number, 5) % 5) AS template_id
FROM numbers({n})
"""


def token_search(
    n_rows: int, directory: Path | None, progress: Callable[[str], None]
) -> dict[str, float]:
    """Generate ``n_rows`` into a fresh chDB, time searches, measure the footprint."""
    from monitoring.cli.logs import search_sql, where_clause
    from monitoring.config import Settings
    from monitoring.sinks.clickhouse.connection import connect
    from monitoring.sinks.clickhouse.migrations import migrate

    tmp = Path(tempfile.mkdtemp(prefix="bench-logs-", dir=directory))
    base = Settings.load(None)
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp / 'chdb'}"})
    client = connect(storage.dsn)
    try:
        migrate(client, storage)
        now = int(time.time() * 1000)
        span = 7 * 86_400_000
        progress(f"inserting {n_rows:,} rows into {tmp} ...")
        t0 = time.monotonic()
        client.command(
            GENERATE_SQL.format(start=now - span, span=span, n=n_rows, rare=RARE_TOKEN),
            settings={"max_insert_threads": 2},
        )
        insert_s = time.monotonic() - t0
        progress(f"inserted in {insert_s:.1f} s")

        def timed(sql: str) -> tuple[float, int]:
            client.query(sql)  # warm-up
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                rows = client.query(sql).result_rows
                runs.append((time.perf_counter() - t) * 1000)
            return statistics.median(runs), len(rows)

        search_ms, matches = timed(search_sql(where_clause(RARE_TOKEN), 50))
        svc_ms, _ = timed(
            search_sql(where_clause("failed", "svc3", "ERROR", now - 3_600_000 * 6), 50)
        )
        rows, disk = client.query(
            "SELECT sum(rows), sum(bytes_on_disk) FROM system.parts "
            "WHERE active AND database = currentDatabase() AND table = 'logs'"
        ).result_rows[0]
        return {
            "insert_s": insert_s, "search_ms": search_ms, "matches": matches,
            "service_ms": svc_ms, "rows": int(rows), "bytes_per_line": int(disk) / int(rows),
        }  # fmt: skip
    finally:
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)


def worker_rate(
    bootstrap: str, n_lines: int, progress: Callable[[str], None] = print
) -> tuple[float, float]:
    """A real ``monitoring worker`` (every agent) working off ``n_lines`` corpus lines
    in 256-line ``LogBatch`` messages on the broker: lines per second of wall time and
    per CPU-second of the worker process, from its first processed line to the last."""
    from confluent_kafka import Producer

    from monitoring.bench.pipeline import drain
    from monitoring.dev.deploy import LocalDeployment, free_port
    from monitoring.runtime.topics import LOGS

    now = int(time.time() * 1000)
    records = [ln.record for ln in generate(n_lines, seed=3, start_ms=now - 600_000,
                                            step_ms=max(1, 600_000 // n_lines))]  # fmt: skip
    codec = AvroCodec.from_directory()
    values = shipped_batches(records, BATCH_SIZES[-1], codec)
    d = LocalDeployment(bootstrap, Path(tempfile.mkdtemp(prefix="bench-logs-worker-")))
    try:
        p = Producer(client_config(bootstrap, partitioner="murmur2_random", **{"linger.ms": 20}))
        for v in values:
            key = codec.decode(v).record["service"].encode()
            while True:
                try:
                    p.produce(d.topic(LOGS), v, key)
                    break
                except BufferError:
                    p.poll(0.05)
        p.flush(60)
        port = free_port()
        d.start("worker", "worker", worker__metrics_port=str(port))
        return drain(d, "worker", port, n_lines, progress, metric='agent_items_total{agent="logs"}')
    finally:
        d.stop_all()


def run(
    bootstrap: str,
    lines: int = 60_000,
    handler_calls: int = 50_000,
    search_rows: int = 10_000_000,
    directory: Path | None = None,
    progress: Callable[[str], None] = print,
    worker_lines: int = 600_000,
) -> LogBench:
    """Every phase; see the module doc."""
    res = LogBench()
    res.calibration_ns = calibration_ns()
    progress(f"agent path over {lines:,} corpus lines ...")
    a = agent_path(lines)
    res.lines_per_s = a["batched"][BATCH_SIZES[-1]]
    res.single_lines_per_s, res.batched_lines_per_s = a["single"], a["batched"]
    res.decode_us, res.batch_decode_us, res.domain_lines_per_s = (
        a["decode_us"],
        a["batch_decode_us"],
        a["domain"],
    )
    progress(f"handler overhead over {handler_calls:,} calls ...")
    res.handler_call_us, res.bare_call_us = handler_overhead(bootstrap, handler_calls)
    res.handler_us = max(0.0, res.handler_call_us - res.bare_call_us)
    if worker_lines > 0:
        progress(f"a worker working off {worker_lines:,} lines in 256-line batches ...")
        res.worker_lines = worker_lines
        res.worker_lines_per_s, res.worker_lines_per_cpu_s = worker_rate(
            bootstrap, worker_lines, progress
        )
    if search_rows <= 0:
        progress("search phase skipped (--rows 0)")
        return res
    s = token_search(search_rows, directory, progress)
    res.search_ms, res.search_service_ms = s["search_ms"], s["service_ms"]
    res.matches, res.rows, res.insert_s = int(s["matches"]), int(s["rows"]), s["insert_s"]
    res.bytes_per_line = s["bytes_per_line"]
    return res
