"""The local Kafka broker and topic administration, against real brokers.

Start/stop tests run a private broker on free ports with its own data directory:
the shared broker on 127.0.0.1:9092 is used by others concurrently and is never
stopped here. Topic tests use fresh topic prefixes.
"""

from __future__ import annotations

import base64
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, OffsetSpec

from monitoring.config import KafkaSettings, Settings
from monitoring.dev.local_kafka import LocalKafka, broker_answers, new_cluster_id
from monitoring.runtime.admin import (
    TopicError,
    describe_topics,
    ensure_topics,
    list_topics,
)
from monitoring.runtime.topics import (
    AGGREGATION_STATE,
    DEAD_LETTER,
    SAMPLES,
    TopicSpec,
    topic_name,
    topic_specs,
)

# --------------------------------------------------------------------- no broker


def test_cluster_id_is_a_kafka_uuid() -> None:
    cid = new_cluster_id()
    assert len(cid) == 22
    assert len(base64.urlsafe_b64decode(cid + "==")) == 16
    assert cid != new_cluster_id()
    # one in 64 random ids starts with "-", which the storage tool read as an option
    assert not any(new_cluster_id().startswith("-") for _ in range(2_000))


@pytest.mark.integration
def test_storage_format_takes_a_cluster_id_starting_with_a_dash(tmp_path: Path) -> None:
    k = LocalKafka(port=_free_port_pair(), data_dir=tmp_path / "k")
    k.render_config()
    assert k.format_storage("-RGXU-gpQjuHMKno-Eox3A") == "-RGXU-gpQjuHMKno-Eox3A"
    meta = (tmp_path / "k" / "data" / "meta.properties").read_text()
    assert "cluster.id=-RGXU-gpQjuHMKno-Eox3A" in meta


def test_config_is_rendered_per_port(tmp_path: Path) -> None:
    k = LocalKafka(port=29092, controller_port=29093, data_dir=tmp_path / "k")
    text = k.render_config().read_text()
    assert "listeners=PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093" in text
    assert "advertised.listeners=PLAINTEXT://127.0.0.1:29092" in text
    assert "controller.quorum.voters=1@127.0.0.1:29093" in text
    assert f"log.dirs={tmp_path / 'k' / 'data'}" in text
    assert "offsets.topic.replication.factor=1" in text
    assert "message.max.bytes=4194304" in text
    assert "$" not in text  # every placeholder substituted


def test_fetch_stamp_tracks_the_pom(tmp_path: Path) -> None:
    pom = tmp_path / "pom.xml"
    pom.write_text("<project/>")
    k = LocalKafka(root=tmp_path / "kafka", pom=pom)
    assert not k.is_fetched()
    k.libs_dir.mkdir(parents=True)
    (k.libs_dir / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    k.stamp_file.write_text(k._pom_hash())
    assert k.is_fetched()
    pom.write_text("<project><changed/></project>")
    assert not k.is_fetched()  # a changed pom means a refetch


def test_stop_without_a_broker_is_a_no_op(tmp_path: Path) -> None:
    k = LocalKafka(port=_free_port_pair(), data_dir=tmp_path / "k")
    assert k.stop() is False
    st = k.status()
    assert not st.running and st.pid is None


# ------------------------------------------------------------ private broker


def _free_port_pair() -> int:
    """A port p such that p and p+1 are both free on loopback."""
    for _ in range(200):
        port = random.randint(20000, 40000)
        ok = True
        for p in (port, port + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def private_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    port = _free_port_pair()
    broker = LocalKafka(port=port, data_dir=tmp_path_factory.mktemp(f"kafka{port}"))
    broker.start()
    try:
        yield broker
    finally:
        broker.destroy()


def _kafka(bootstrap: str, prefix: str | None = None, **kw: object) -> KafkaSettings:
    return KafkaSettings.model_validate(
        {
            "bootstrap_servers": bootstrap,
            "topic_prefix": prefix or f"t{uuid.uuid4().hex[:8]}.",
            **kw,
        }
    )


@pytest.mark.integration
@pytest.mark.own_broker
def test_start_is_idempotent(private_kafka: LocalKafka) -> None:
    first = private_kafka.status()
    assert first.running and first.answering and first.managed
    assert first.pid is not None
    assert private_kafka.last_start_seconds is not None
    print(f"broker start took {private_kafka.last_start_seconds:.1f}s")

    # A second LocalKafka on the same data dir (another process, say) finds it.
    again = LocalKafka(port=private_kafka.port, data_dir=private_kafka.data_dir)
    st = again.start()
    assert st.pid == first.pid
    assert again.last_start_seconds is None  # nothing was launched
    assert private_kafka.start().pid == first.pid


@pytest.mark.integration
@pytest.mark.own_broker
def test_ensure_topics_creates_the_layout(private_kafka: LocalKafka) -> None:
    ks = _kafka(private_kafka.bootstrap, retention="2d")
    specs = topic_specs(ks)
    result = ensure_topics(ks)
    admin = AdminClient({"bootstrap.servers": private_kafka.bootstrap})
    # every partition's log exists on return: ListOffsets answers at once (straight
    # after creation the broker says NOT_LEADER_FOR_PARTITION for a few tenths of a second)
    request = {
        TopicPartition(s.name, p): OffsetSpec.latest() for s in specs for p in range(s.partitions)
    }
    offsets = [f.result() for f in admin.list_offsets(request, request_timeout=5).values()]
    assert [o.offset for o in offsets] == [0] * len(request)
    assert result == {s.name: "created" for s in specs}
    assert ensure_topics(ks) == {s.name: "exists" for s in specs}  # idempotent

    md = admin.list_topics(timeout=10)
    for spec in specs:
        assert len(md.topics[spec.name].partitions) == spec.partitions
    resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in specs]
    configs = {r.name: f.result(10) for r, f in admin.describe_configs(resources).items()}
    for spec in specs:
        for key, value in spec.config.items():
            assert configs[spec.name][key].value == value, (spec.name, key)
    samples = topic_name(ks, SAMPLES)
    assert configs[samples]["retention.ms"].value == str(2 * 86_400_000)
    assert configs[samples]["max.message.bytes"].value == str(4 * 1024 * 1024)
    assert configs[topic_name(ks, AGGREGATION_STATE)]["cleanup.policy"].value == "compact"
    assert len(md.topics[topic_name(ks, SAMPLES)].partitions) >= 6
    assert len(md.topics[topic_name(ks, DEAD_LETTER)].partitions) == 1


@pytest.mark.integration
@pytest.mark.own_broker
def test_ensure_topics_aligns_configs_of_existing_topics(private_kafka: LocalKafka) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    ensure_topics(_kafka(private_kafka.bootstrap, prefix, retention="7d"))
    result = ensure_topics(_kafka(private_kafka.bootstrap, prefix, retention="1d"))
    samples = f"{prefix}{SAMPLES}"
    assert result[samples] == "updated"
    assert result[f"{prefix}{AGGREGATION_STATE}"] == "exists"  # no retention.ms there
    info = describe_topics(private_kafka.bootstrap, [samples])[samples]
    assert info.overrides["retention.ms"] == str(86_400_000)


@pytest.mark.integration
@pytest.mark.own_broker
def test_too_few_partitions_is_a_clear_error(private_kafka: LocalKafka) -> None:
    ks = _kafka(private_kafka.bootstrap)
    name = ks.topic_prefix + "small"
    ensure_topics(ks, [TopicSpec(name, 2, {"cleanup.policy": "delete"})])
    want = [TopicSpec(name, 6, {"cleanup.policy": "delete"})]
    with pytest.raises(TopicError, match=r"has 2 partitions but the settings need 6"):
        ensure_topics(ks, want)
    assert ensure_topics(ks, want, grow=True) == {name: "grown"}
    assert list_topics(private_kafka.bootstrap, prefix=name) == {name: 6}
    # More partitions than asked for is fine.
    assert ensure_topics(ks, [TopicSpec(name, 3, {})]) == {name: "exists"}


@pytest.mark.integration
@pytest.mark.own_broker
def test_stop_restart_keeps_data_and_stop_is_idempotent(private_kafka: LocalKafka) -> None:
    ks = _kafka(private_kafka.bootstrap)
    ensure_topics(ks)
    topic = topic_name(ks, SAMPLES)
    _produce(private_kafka.bootstrap, topic, [b"before-restart"])
    pid = private_kafka.status().pid

    assert private_kafka.stop() is True
    assert private_kafka.stop() is False
    st = private_kafka.status()
    assert not st.running and st.pid is None and not st.answering
    assert not broker_answers(private_kafka.bootstrap, timeout=1)

    st = private_kafka.start()  # storage already formatted: no second format
    assert st.running and st.pid != pid
    assert ensure_topics(ks) == {s.name: "exists" for s in topic_specs(ks)}
    assert _consume(private_kafka.bootstrap, topic, 1) == [b"before-restart"]


# ------------------------------------------------------ shared session broker


def _produce(bootstrap: str, topic: str, values: list[bytes], key: bytes = b"k") -> None:
    # Idempotence keeps per-partition order across retries (without it, a batch
    # retried after a transient error can land behind a later one).
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "message.max.bytes": 5 * 1024 * 1024,
        }
    )
    errors: list[object] = []
    for v in values:
        p.produce(topic, v, key=key, on_delivery=lambda err, _msg: err and errors.append(err))
    assert p.flush(30) == 0
    assert not errors, errors


def _consume(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list[bytes]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"g{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    md = c.list_topics(topic, timeout=10)
    c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        value = msg.value()
        assert value is not None
        out.append(value)
    c.close()
    return out


@pytest.mark.integration
def test_kafka_settings_point_at_fresh_topics(
    kafka_settings: Settings, kafka_bootstrap: str
) -> None:
    ks = kafka_settings.kafka
    assert ks.bootstrap_servers == kafka_bootstrap
    assert ks.topic_prefix.startswith("t") and ks.topic_prefix.endswith(".")
    have = list_topics(kafka_bootstrap, prefix=ks.topic_prefix)
    assert {s.name: s.partitions for s in topic_specs(ks)} == have


@pytest.mark.integration
def test_settings_factory_gives_distinct_prefixes(
    settings_factory: Callable[..., Settings],
) -> None:
    a = settings_factory(ensure=False)
    b = settings_factory(ensure=False, samples_partitions=3)
    assert a.kafka.topic_prefix != b.kafka.topic_prefix
    assert b.kafka.samples_partitions == 3


@pytest.mark.integration
def test_produce_consume_round_trip(kafka_settings: Settings) -> None:
    bootstrap = kafka_settings.kafka.bootstrap_servers
    topic = topic_name(kafka_settings.kafka, SAMPLES)
    values = [f"sample-{i}".encode() for i in range(100)]
    big = bytes(random.getrandbits(8) for _ in range(64)) * (3 * 1024 * 1024 // 64)  # 3 MiB
    _produce(bootstrap, topic, [*values, big], key=b"series-1")
    got = _consume(bootstrap, topic, len(values) + 1)
    # One key: one partition, so order is kept.
    assert got == [*values, big]
