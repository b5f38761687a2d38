"""`monitoring dlq list|show|replay` on the real broker, through the CLI in-process.

Real records (garbage, a record of another type, a schema version this build does not
have, an oversized log record, a sample refused for cardinality) are produced to the
deployment's input topics, then dead-lettered by the project's own dead-letter writer
(``runtime.outputs.DeadLetters``, the store's and notifier's path) with their source
coordinates; the oversized one also through a writer with a smaller message limit, so
that its payload is cut (``x-truncated``). Replays land on the original partition with
the original key and bytes; a second replay changes nothing on the broker.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from typer.testing import CliRunner
from unit.test_ops_deadletters import future_sample

from monitoring.cli import app
from monitoring.config import Settings
from monitoring.ops.dlq_kafka import ledger_spec
from monitoring.runtime.outputs import DeadLetters
from monitoring.runtime.topics import DEAD_LETTER, LOGS, SAMPLES, topic_name
from monitoring.wire.codec import AvroCodec

pytestmark = pytest.mark.integration

runner = CliRunner()


def env_of(settings: Settings) -> dict[str, str]:
    k = settings.kafka
    return {
        "MONITORING_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "MONITORING_KAFKA__TOPIC_PREFIX": k.topic_prefix,
        "MONITORING_CONFIG": "",
    }


def cli(settings: Settings, *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, ["dlq", *args], env=env_of(settings))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def cli_json(settings: Settings, *args: str, code: int = 0) -> Any:
    return json.loads(cli(settings, *args, "--json", code=code).stdout)


def produce(settings: Settings, topic: str, key: bytes, value: bytes) -> tuple[int, int]:
    """Produce one record; its (partition, offset)."""
    where: list[tuple[int, int]] = []

    def done(err: KafkaError | None, msg: Any) -> None:
        assert err is None, err
        where.append((msg.partition(), msg.offset()))

    p = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers,
                  "partitioner": "murmur2_random", "message.max.bytes": 1 << 20})  # fmt: skip
    p.produce(topic, value, key, on_delivery=done)
    assert p.flush(30) == 0
    return where[0]


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "probe"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), 10)[1] for p in parts}
    finally:
        c.close()


def read_at(settings: Settings, topic: str, partition: int, offset: int) -> Any:
    c = Consumer({"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": "probe",
                  "enable.auto.commit": False})  # fmt: skip
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                return m
        raise AssertionError(f"nothing at {topic}[{partition}]@{offset}")
    finally:
        c.close()


@pytest.fixture
def dead(kafka_settings: Settings) -> dict[str, Any]:
    """Five real records dead-lettered; {name: (source partition, offset, key, value)}."""
    s = kafka_settings
    codec = AvroCodec.from_directory()
    samples, logs = topic_name(s.kafka, SAMPLES), topic_name(s.kafka, LOGS)
    sample = {"name": "dlq_probe", "value": 2.5, "timestamp_ms": int(time.time() * 1000),
              "labels": {"host": "a"}}  # fmt: skip
    log = {"timestamp_ms": int(time.time() * 1000), "service": "api", "message": "x" * 100_000}
    short = {**log, "message": "hi"}
    records = {
        "garbage": (samples, b"g", b"\x00\x13not avro at all", "bad-marker"),
        "wrong-type": (samples, b"w", codec.encode("monitoring.LogRecord", short), "wrong-record"),
        "future": (samples, b'dlq_probe{host="b"}', future_sample(), "unknown-fingerprint"),
        "cardinality": (samples, b'dlq_probe{host="a"}', codec.encode("monitoring.MetricSample",
                        sample), "cardinality"),
        "oversized": (logs, b"api", codec.encode("monitoring.LogRecord", log), "oversized"),
    }  # fmt: skip
    writer = DeadLetters(s.kafka, topic_name(s.kafka, DEAD_LETTER), "test")
    small = DeadLetters(
        s.kafka.model_copy(update={"max_message_bytes": 16_384}),
        topic_name(s.kafka, DEAD_LETTER),
        "test",
    )
    out: dict[str, Any] = {}
    for name, (topic, key, value, reason) in records.items():
        part, off = produce(s, topic, key, value)
        out[name] = (topic, part, off, key, value)
        assert writer.send(key, value, reason, f"test {name}", (topic, part, off))
        assert writer.flush(30)  # in this order: offsets 0..4
    _, part, off, key, value = out["oversized"]
    assert small.send(key, value, "oversized", "cut", (logs, part, off))
    assert small.flush(30)
    return out


def test_list_groups_by_reason_and_topic(kafka_settings: Settings, dead: dict[str, Any]) -> None:
    s = kafka_settings
    doc = cli_json(s, "list", "--since", "1h")
    groups = {(g["reason"], g["source_topic"]): g for g in doc["groups"]}
    samples, logs = topic_name(s.kafka, SAMPLES), topic_name(s.kafka, LOGS)
    assert {k: g["count"] for k, g in groups.items()} == {
        ("bad-marker", samples): 1,
        ("wrong-record", samples): 1,
        ("unknown-fingerprint", samples): 1,
        ("cardinality", samples): 1,
        ("oversized", logs): 2,
    }
    assert groups[("oversized", logs)]["offsets"] == "4-5"
    assert groups[("cardinality", samples)]["replayable"] is True
    assert doc["total"] == 6 and doc["partial"] == ""
    assert cli_json(s, "list", "--reason", "oversized")["total"] == 2
    assert cli_json(s, "list", "--topic", "metrics.samples")["total"] == 4
    by_time = cli_json(s, "list", "--bucket", "1d")["groups"]
    assert sum(g["count"] for g in by_time) == 6 and all("bucket_ms" in g for g in by_time)
    assert "bucket" in cli(s, "list", "--bucket", "1h").stdout
    # a time bound before all of them: nothing is read at all
    text = cli(s, "list", "--since", "1ms").stdout
    assert "0 dead letters" in text
    # the record bound stops the scan and says so
    bounded = cli_json(s, "list", "--max-records", "2")
    assert bounded["read"] == 2 and "record bound" in bounded["partial"]


def test_show_decodes_as_far_as_it_goes(kafka_settings: Settings, dead: dict[str, Any]) -> None:
    s = kafka_settings
    doc = cli_json(s, "show", "0-5")
    recs = {r["offset"]: r for r in doc["records"]}
    assert sorted(recs) == [0, 1, 2, 3, 4, 5]
    assert recs[0]["decoding"]["status"] == "bad-marker"
    assert recs[0]["decoding"]["text"].startswith("..not avro")
    assert recs[1]["decoding"]["schema"] == "monitoring.LogRecord"  # decodes: another type
    assert recs[1]["decoding"]["status"] == "decoded" and recs[1]["reason"] == "wrong-record"
    assert recs[2]["decoding"]["status"] == "unknown-fingerprint"
    assert recs[3]["decoding"]["status"] == "decoded"
    assert json.loads(recs[3]["decoding"]["record"])["name"] == "dlq_probe"
    assert recs[4]["decoding"]["status"] == "decoded" and recs[4]["reason"] == "oversized"
    assert len(recs[4]["decoding"]["record"]) < 2100  # the 100 kB message is cut for display
    assert recs[5]["decoding"]["status"] == "cut"
    assert recs[5]["headers"]["x-truncated"] == str(len(dead["oversized"][4]))
    src = dead["cardinality"]
    assert recs[3]["source"] == {"topic": src[0], "partition": src[1], "offset": src[2]}
    assert cli_json(s, "show", "--limit", "2")["records"][1]["offset"] == 1
    text = cli(s, "show", "2").stdout
    assert "unknown-fingerprint" in text and "fingerprint" in text
    assert "selection" in cli(s, "show", "1;2", code=2).output


def test_replay_once_then_nothing_changes(kafka_settings: Settings, dead: dict[str, Any]) -> None:
    s = kafka_settings
    samples = topic_name(s.kafka, SAMPLES)
    # nothing named: refused
    assert "name what to replay" in cli(s, "replay", code=2).output
    dry = cli_json(s, "replay", "0-5", "--dry-run")
    actions = {i["dead_letter"]: i["action"] for i in dry["items"]}
    assert actions == {"0:0": "refused", "0:1": "refused", "0:2": "would-replay",
                       "0:3": "would-replay", "0:4": "refused", "0:5": "refused"}  # fmt: skip
    why = {i["dead_letter"]: i["why"] for i in dry["items"]}
    assert "permanent" in why["0:0"] and "--force" in why["0:0"]
    assert "cut to fit" in why["0:5"]
    before = end_offsets(s, samples)
    assert end_offsets(s, samples) == before  # a dry run sends nothing

    first = cli_json(s, "replay", "0-5")
    assert first["summary"] == {"replayed": 2, "refused": 4}
    for item in first["items"]:
        if item["action"] != "replayed":
            continue
        name = "future" if item["dead_letter"] == "0:2" else "cardinality"
        topic, part, _off, key, value = dead[name]
        assert (item["target"], item["partition"]) == (topic, part)
        m = read_at(s, topic, item["partition"], item["offset"])
        assert (m.key(), m.value()) == (key, value)
        assert dict(m.headers())["x-replayed-from"] == (
            f"{topic_name(s.kafka, DEAD_LETTER)}:0:{item['dead_letter'].split(':')[1]}".encode()
        )
    after_first = end_offsets(s, samples)
    assert sum(after_first.values()) == sum(before.values()) + 2

    second = cli_json(s, "replay", "0-5")
    assert second["summary"] == {"already": 2, "refused": 4}
    assert end_offsets(s, samples) == after_first  # the second replay changed nothing
    assert "replayed before" in {i["action"]: i["why"] for i in second["items"]}["already"]
    ledger = end_offsets(s, ledger_spec(s).name)
    assert sum(ledger.values()) == 4  # replaying, then replayed, for each of the two

    # --force replays a permanent reason, never a cut payload; --again repeats
    forced = cli_json(s, "replay", "0,5", "--force")
    assert {i["dead_letter"]: i["action"] for i in forced["items"]} == {
        "0:0": "replayed", "0:5": "refused",
    }  # fmt: skip
    again = cli_json(s, "replay", "3", "--again")
    assert again["summary"] == {"replayed": 1}
    assert sum(end_offsets(s, samples).values()) == sum(after_first.values()) + 2


def test_replay_refuses_a_source_topic_outside_the_deployment(kafka_settings: Settings) -> None:
    s = kafka_settings
    writer = DeadLetters(s.kafka, topic_name(s.kafka, DEAD_LETTER), "test")
    assert writer.send(b"k", b"v", "cardinality", "x", ("__consumer_offsets", 0, 1))
    assert writer.flush(30)
    doc = cli_json(s, "replay", "0")
    assert doc["items"][0]["action"] == "refused"
    assert "not a topic of this deployment" in doc["items"][0]["why"]
    # hostile text in headers is shown as text, never read as markup
    hostile = "[/] [bold red]<script>x</script>"
    assert writer.send(b"[/]", hostile.encode(), hostile, hostile, (hostile, 0, 1))
    assert writer.flush(30)
    listed = cli(s, "list").stdout
    assert "[/] [bold" in listed or "[/]" in listed
    shown = cli(s, "show", "1").stdout
    assert hostile in shown
    assert cli_json(s, "show", "1")["records"][0]["reason"] == hostile
    assert hostile in cli(s, "replay", "1", "--dry-run").stdout


def test_an_unreachable_broker_fails_with_a_message(kafka_settings: Settings) -> None:
    s = kafka_settings.model_copy(
        update={
            "kafka": kafka_settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
        }
    )
    t0 = time.monotonic()
    result = cli(s, "list", "--timeout", "2", code=1)
    assert "error" in result.output
    print(f"dlq list against 127.0.0.1:1 gave up after {time.monotonic() - t0:.1f} s")


def test_a_replayed_record_the_store_holds_changes_nothing(
    settings_factory: Any, tmp_path: Any
) -> None:
    """The store (the real one, in a thread) stored a sample that a worker dead-lettered
    (reason cardinality); the replay reaches the store again and collapses into its row."""
    import threading
    import uuid

    from prometheus_client import CollectorRegistry

    from monitoring.sinks.clickhouse.connection import connect
    from monitoring.sinks.clickhouse.migrations import migrate
    from monitoring.sinks.clickhouse.store import Store
    from monitoring.sinks.clickhouse.writer import StoreMetrics, Writer

    base = settings_factory()
    storage = base.storage.model_copy(update={"dsn": f"chdb://{tmp_path / 'chdb'}"})
    s = base.model_copy(update={"storage": storage})
    codec = AvroCodec.from_directory()
    samples = topic_name(s.kafka, SAMPLES)
    sample = {"name": "replayed", "value": 4.0, "timestamp_ms": int(time.time() * 1000),
              "labels": {"host": "a"}}  # fmt: skip
    key = b'replayed{host="a"}'
    part, off = produce(s, samples, key, codec.encode("monitoring.MetricSample", sample))
    dl = DeadLetters(s.kafka, topic_name(s.kafka, DEAD_LETTER), "aggregation")
    assert dl.send(key, codec.encode("monitoring.MetricSample", sample), "cardinality", "full",
                   (samples, part, off))  # fmt: skip
    assert dl.flush(30)
    client = connect(s.storage.dsn)
    migrate(client, s.storage)
    group = f"store-{uuid.uuid4().hex[:8]}"

    def count(sql: str) -> int:
        return int(client.query(sql).result_rows[0][0])

    def store_until(done: Any) -> None:
        store = Store(s, Writer(client, StoreMetrics(CollectorRegistry())), codec=codec,
                      group_id=group)  # fmt: skip
        stop = threading.Event()
        t = threading.Thread(target=store.run, args=(stop,))
        t.start()
        deadline = time.monotonic() + 60
        try:
            while not done() and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            stop.set()
            t.join(60)
        assert done() and not t.is_alive()

    def committed_through(offset: int) -> bool:
        c = Consumer({"bootstrap.servers": s.kafka.bootstrap_servers, "group.id": group})
        try:
            tp = c.committed([TopicPartition(samples, part)], timeout=10)[0]
            return tp.offset > offset
        finally:
            c.close()

    try:
        store_until(lambda: committed_through(off))
        assert count("SELECT count() FROM samples FINAL") == 1
        replayed = cli_json(s, "replay", "0")["items"][0]
        assert (replayed["action"], replayed["partition"]) == ("replayed", part)
        store_until(lambda: committed_through(replayed["offset"]))
        assert count("SELECT count() FROM samples FINAL") == 1  # collapsed: nothing changed
        assert count("SELECT sum(value) FROM samples FINAL") == 4
        assert cli_json(s, "replay", "0")["summary"] == {"already": 1}
    finally:
        client.close()


def test_a_recreated_dead_letter_topic_is_not_mistaken_for_the_replayed_one(
    kafka_settings: Settings,
) -> None:
    from monitoring.runtime.admin import delete_topics, ensure_topics

    s = kafka_settings
    dlq, samples = topic_name(s.kafka, DEAD_LETTER), topic_name(s.kafka, SAMPLES)

    def dead_letter(value: bytes) -> None:
        writer = DeadLetters(s.kafka, dlq, "test")
        assert writer.send(b"k", value, "cardinality", "x", (samples, 0, 0))
        assert writer.flush(30)

    dead_letter(b"first")
    assert cli_json(s, "replay", "0")["summary"] == {"replayed": 1}
    delete_topics(s.kafka.bootstrap_servers, [dlq])
    deadline = time.monotonic() + 60
    while True:  # deletion completes asynchronously
        try:
            ensure_topics(s)
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    dead_letter(b"second")  # offset 0 again, another record
    assert cli_json(s, "replay", "0")["summary"] == {"replayed": 1}
    assert cli_json(s, "replay", "0")["summary"] == {"already": 1}
