"""LogBatch end to end on the real broker and embedded ClickHouse: batches shipped by a
LogShipper land line for line in the logs table with their documented identity; a bad
line inside a batch goes alone to the dead-letter topic and the rest of its batch is
kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Producer
from fixtures.agents import wait_for
from fixtures.progress import end_offsets, read_to_end

from monitoring.agents.log_processing import batch_event_id, event_id
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.logs.corpus import Line, generate
from monitoring.runtime.topics import DEAD_LETTER, LOG_STORED, LOG_TEMPLATES, LOGS, SAMPLES
from monitoring.sdk.log_shipping import LogShipper
from monitoring.wire.codec import HEADER_LEN, AvroCodec
from monitoring.wire.log_batch import LOG_BATCH, LogBatchDecoder, LogBatchEncoder
from monitoring.wire.log_encoding import LOG_RECORD

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODEC = AvroCodec.from_directory()
LOG_ENV = {"LOGS__IDLE_TIMEOUT": "2s", "LOGS__CHECKPOINT_INTERVAL": "500ms"}
FIELDS = ("timestamp_ms", "service", "host", "level", "logger", "message", "trace_id",
          "span_id", "exception", "attributes")  # fmt: skip
ROWS_SQL = (
    "SELECT event_id, service, toUnixTimestamp64Milli(timestamp), level, message, exception, "
    "attributes, host, logger, trace_id FROM logs FINAL"
)


def consume(p: Pipeline, topic: str, n: int, timeout: float = 60) -> list[Any]:
    """Every record on ``topic`` once it holds ``n``: up to its end at that point, so
    anything extra produced by then is there too."""
    bootstrap = p.settings.kafka.bootstrap_servers
    wait_for(lambda: sum(end_offsets(bootstrap, topic).values()) >= n, timeout, f"{n} on {topic}")
    return read_to_end(bootstrap, topic)


def test_batches_land_line_for_line(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(**LOG_ENV)
    now = int(time.time() * 1000)
    lines: list[Line] = generate(1_200, seed=31, start_ms=now - 300_000, step_ms=50)
    # one shipper per process: its records are all of one service and host
    lines.sort(key=lambda ln: (ln.record["service"], ln.record["host"]))
    p.start_store()
    p.start("worker", "worker")
    shipper = LogShipper(p.settings.kafka.bootstrap_servers, p.topic(LOGS), "unused",
                         buffer_size=len(lines), batch_lines=100)  # fmt: skip
    for ln in lines:
        shipper.submit(tuple(ln.record[f] for f in FIELDS))  # type: ignore[arg-type]
    assert shipper.close(60) == 0 and shipper.delivered == len(lines)
    # a batch written by hand: line 1 has no message, line 2 invalid UTF-8
    placeholder = "Q" * 8
    bad_batch = LogBatchEncoder(CODEC).encode("hand", "h9", [
        (now - 1_000, "warning", "lg", "kept 1", "", "", "", {"a": "1"}),
        (now - 999, "info", "lg", "", "", "", "", {}),
        (now - 998, "info", "lg", placeholder, "", "", "", {}),
        (now - 997, "LOUD", "lg", "kept 4", "", "", "", {}),
    ]).replace(placeholder.encode(), b"caf\xe9 \xffok")  # fmt: skip
    prod = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    prod.produce(p.topic(LOGS), bad_batch, b"hand")
    assert prod.flush(30) == 0

    shipped = consume(p, p.topic(LOGS), 1)
    decoder = LogBatchDecoder(CODEC)
    expected_ids: dict[tuple[str, int], int] = {}
    batches = 0
    for m in shipped:
        if decoder.accepts(m.value()):
            cols = decoder.decode(m.value())
            batches += 1
            for i, ts in enumerate(cols.timestamps_ms):
                expected_ids[(cols.service, ts)] = batch_event_id(m.partition(), m.offset(), i)
        else:
            assert m.value()[:HEADER_LEN] == CODEC.latest(LOG_RECORD).header
            rec = CODEC.decode(m.value()).record
            expected_ids[(rec["service"], rec["timestamp_ms"])] = event_id(
                m.partition(), m.offset()
            )
    assert len(expected_ids) == len(lines) + 4
    assert batches >= 15 and len(shipped) < len(lines) / 20  # mostly batches of ~100 lines

    n = len(lines) + 3  # the hand batch's line 1 is a dead letter
    p.wait(lambda: p.query("SELECT count() FROM logs FINAL")[0][0] >= n, 180,
           f"{n} stored logs\n{p.logs()}")  # fmt: skip
    # every input committed by the worker and the store: anything extra is in by now
    p.wait(lambda: p.drained(worker=[LOGS], store=[LOG_STORED, LOG_TEMPLATES, SAMPLES]),
           120, f"drained\n{p.logs()}")  # fmt: skip
    rows = {(r[1], r[2]): r for r in p.query(ROWS_SQL)}
    assert len(rows) == n
    for ln in lines:
        rec = ln.record
        row = rows[(rec["service"], rec["timestamp_ms"])]
        assert row[0] == expected_ids[(rec["service"], rec["timestamp_ms"])]
        assert row[3] == ln.level
        assert row[4:] == [rec["message"], rec["exception"], rec["attributes"], rec["host"],
                           rec["logger"], rec["trace_id"]]  # fmt: skip
    hand = sorted(r for r in rows.values() if r[1] == "hand")
    assert [(r[0], r[3], r[4], r[6]) for r in hand] == [
        (batch_event_id(*_where(shipped, bad_batch), 0), "WARN", "kept 1", {"a": "1"}),
        (batch_event_id(*_where(shipped, bad_batch), 2), "INFO", "caf\ufffd \ufffdok",
         {"monitoring.invalid_utf8": "true"}),
        (batch_event_id(*_where(shipped, bad_batch), 3), "INFO", "kept 4",
         {"monitoring.level_original": "LOUD"}),
    ]  # fmt: skip
    letters = consume(p, p.topic(DEAD_LETTER), 1)
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert (headers["x-reason"], headers["x-batch-index"], headers["x-stage"]) == (
        "missing-message", "1", "logs",
    )  # fmt: skip
    part, off = _where(shipped, bad_batch)
    assert (headers["x-source-partition"], headers["x-source-offset"]) == (str(part), str(off))
    bad = CODEC.decode(letters[0].value())
    assert (bad.name, bad.record["service"], bad.record["timestamp_ms"]) == (
        LOG_RECORD, "hand", now - 999,
    )  # fmt: skip
    assert CODEC.latest(LOG_BATCH).version == 1


def _where(messages: list[Any], value: bytes) -> tuple[int, int]:
    (m,) = [m for m in messages if m.value() == value]
    return m.partition(), m.offset()
