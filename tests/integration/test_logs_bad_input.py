"""Bad log input end to end: each case handled as documented in monitoring/logs/records.py,
the undecodable or unusable ones in the dead-letter topic once with their reason and
counted (``agent_dead_letters_total{agent="logs",reason}``), and nothing else lost: garbage bytes, a
truncated body, an empty value, a tombstone, another schema's record (a MetricSample),
a record of a future LogRecord version (a fingerprint the worker does not know), a
record too large for its outputs to fit the message limit, an unusable service name."""

from __future__ import annotations

import io
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from typing import Any

import fastavro
import pytest
from confluent_kafka import Consumer, Producer
from fastavro.schema import to_parsing_canonical_form

from monitoring.agents.log_processing import input_limit
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.dev.deploy import free_port
from monitoring.runtime.topics import DEAD_LETTER, LOGS
from monitoring.wire.codec import MARKER, AvroCodec, default_schema_dir, rabin_fingerprint

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CODEC = AvroCodec.from_directory()
LOG = "monitoring.LogRecord"
MB = 1024 * 1024


def rec(ts: int, **kw: Any) -> dict[str, Any]:
    return {"timestamp_ms": ts, "service": "svc", "level": "info", "message": "m", **kw}


def invalid_utf8(ts: int) -> bytes:
    placeholder = "Q" * 12
    data = CODEC.encode(LOG, rec(ts, message=f"user {placeholder} left"))
    bad = b"caf\xe9 \xff\xfe badd"
    assert len(bad) == len(placeholder)  # the length prefix stays right
    return data.replace(placeholder.encode(), bad)


def future_version(ts: int) -> bytes:
    """A LogRecord of a version this worker does not have (one more field): its writer
    fingerprint is unknown, as after a producer upgrade before the worker's."""
    schema = json.loads((default_schema_dir() / "log_record.v1.avsc").read_text())
    schema["fields"].append({"name": "tenant", "type": "string", "default": ""})
    parsed = fastavro.parse_schema(schema)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, {**rec(ts, message="from the future"), "tenant": "t"})
    fp = rabin_fingerprint(to_parsing_canonical_form(parsed).encode())
    assert all(v.fingerprint != fp for v in CODEC.versions())
    return MARKER + fp.to_bytes(8, "little") + buf.getvalue()


def metric(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    prefix = f"{name}{{{want}}} " if labels else f"{name} "
    return sum(float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(prefix))


def dead_letters(p: Pipeline, n: int, timeout: float = 60) -> list[dict[str, str]]:
    c = Consumer(
        {
            "bootstrap.servers": p.settings.kafka.bootstrap_servers,
            "group.id": f"check-{p.prefix}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([p.topic(DEAD_LETTER)])
    out = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append({k: v.decode() for k, v in m.headers() or []})
        if len(out) >= n and time.monotonic() > deadline - timeout + 10:
            break  # waited at least 10 s for any duplicate
    c.close()
    return out


def test_bad_log_input(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(LOGS__IDLE_TIMEOUT="2s", LOGS__CHECKPOINT_INTERVAL="500ms")
    now = int(time.time() * 1000)
    t = [now - 60_000 + i * 10 for i in range(20)]
    good = CODEC.encode(LOG, rec(t[0], message="alpha 1 ok"))
    sample = {"name": "cpu", "value": 1.0, "timestamp_ms": t[10], "labels": {"host": "a"}}
    too_big = input_limit(p.settings.kafka.max_message_bytes) + 1
    msgs = [
        good,
        invalid_utf8(t[1]),
        CODEC.encode(LOG, rec(t[2], message="x" * MB, level="error")),
        CODEC.encode(LOG, rec(t[3], service="")),  # missing service
        CODEC.encode(LOG, rec(t[4], message="")),  # missing message
        CODEC.encode(LOG, rec(t[5], level="LOUD", message="beta 2 ok")),  # unknown level
        b"\x00\x01 not avro at all",
        good[:-3],  # truncated body
        CODEC.encode(LOG, rec(0, message="gamma 3 ok")),  # no timestamp
        CODEC.encode(LOG, rec(t[9], message="alpha 9 ok")),
        b"",  # empty value
        None,  # tombstone
        CODEC.encode("monitoring.MetricSample", sample),  # valid Avro, another record
        future_version(t[11]),
        CODEC.encode(LOG, rec(t[12], message="z" * too_big)),  # outputs might not fit
        CODEC.encode(LOG, rec(t[13], service="s" * 300)),  # a service name too long
        CODEC.encode(LOG, rec(t[14], message="omega 14 ok")),  # processing goes on
    ]
    assert len(msgs[-3]) > too_big
    port = free_port()
    p.start_store()
    p.start("worker", "worker", worker__metrics_port=str(port))
    prod = Producer(
        {"bootstrap.servers": p.settings.kafka.bootstrap_servers, "message.max.bytes": 4 * MB}
    )
    for m in msgs:
        prod.produce(p.topic(LOGS), m, b"svc")
    assert prod.flush(30) == 0
    p.wait(
        lambda: p.query("SELECT count() FROM logs FINAL")[0][0] >= 7,
        120,
        f"stored logs\n{p.logs()}",
    )
    p.wait(
        lambda: metric(port, "agent_messages_total", agent="logs") == len(msgs),
        30,
        "all messages handled",
    )
    rows = p.query(
        "SELECT toUnixTimestamp64Milli(timestamp), level, message, attributes, "
        "toUnixTimestamp64Milli(observed) FROM logs FINAL ORDER BY event_id"
    )
    assert len(rows) == 7
    by_msg = {r[2][:20]: r for r in rows}
    assert by_msg["alpha 1 ok"][:4] == [t[0], "INFO", "alpha 1 ok", {}]
    assert by_msg["alpha 9 ok"][:4] == [t[9], "INFO", "alpha 9 ok", {}]
    assert by_msg["omega 14 ok"][:4] == [t[14], "INFO", "omega 14 ok", {}]
    bad = by_msg["user caf\ufffd \ufffd\ufffd badd le"]
    assert bad[2] == "user caf\ufffd \ufffd\ufffd badd left"
    assert bad[3] == {"monitoring.invalid_utf8": "true"}
    big = by_msg["x" * 20]
    assert (big[1], big[2]) == ("ERROR", "x" * 65536)
    assert big[3] == {
        "monitoring.truncated": "message",
        "monitoring.original_bytes": f"message={MB}",
    }
    assert by_msg["beta 2 ok"][1:4] == ["INFO", "beta 2 ok", {"monitoring.level_original": "LOUD"}]
    gamma = by_msg["gamma 3 ok"]
    assert gamma[0] == gamma[4]  # the Kafka timestamp replaced the missing one
    assert gamma[3] == {"monitoring.timestamp_original": "0"}
    expected = {
        "missing-service": 1,
        "missing-message": 1,
        "bad-marker": 1,
        "truncated": 2,  # a cut body, an empty value
        "not-bytes": 1,
        "wrong-record": 1,
        "unknown-fingerprint": 1,
        "oversized": 1,
        "bad-service": 1,
    }
    letters = [d for d in dead_letters(p, sum(expected.values())) if d.get("x-stage") == "logs"]
    assert Counter(d["x-reason"] for d in letters) == expected
    assert all(d["x-source-topic"] == p.topic(LOGS) for d in letters)
    counted = {
        r: metric(port, "agent_dead_letters_total", agent="logs", reason=r) for r in expected
    }
    assert counted == {r: float(n) for r, n in expected.items()}
