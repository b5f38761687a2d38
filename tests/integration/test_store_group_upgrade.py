"""A store upgraded from the fixed group ``monitoring-store`` to ``<prefix>store`` goes on
from the old group's offsets instead of re-reading its topics' retention."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from monitoring.config import Settings
from monitoring.runtime import consume
from monitoring.runtime.topics import SAMPLES, topic_name
from monitoring.sinks.clickhouse.store import (
    LEGACY_STORE_GROUP,
    adopt_legacy_offsets,
    store_group,
    topics,
)

pytestmark = pytest.mark.integration


def committed(settings: Settings, group: str) -> dict[tuple[str, int], int]:
    c = Consumer(consume.config(settings.kafka, group))
    try:
        tps = [TopicPartition(t, p) for t in topics(settings) for p in consume.partitions(c, t)]
        return {(tp.topic, tp.partition): tp.offset for tp in c.committed(tps, timeout=10)}
    finally:
        c.close()


def commit(settings: Settings, group: str, offsets: list[TopicPartition]) -> None:
    c = Consumer(consume.config(settings.kafka, group))
    try:
        c.commit(offsets=offsets, asynchronous=False)
    finally:
        c.close()


def test_the_old_groups_offsets_are_adopted_once(kafka_settings: Settings) -> None:
    samples = topic_name(kafka_settings.kafka, SAMPLES)
    p = Producer({"bootstrap.servers": kafka_settings.kafka.bootstrap_servers})
    for i in range(30):
        p.produce(samples, b"x", partition=i % 2)
    assert p.flush(30) == 0
    old = [TopicPartition(samples, 0, 11), TopicPartition(samples, 1, 7)]
    commit(kafka_settings, LEGACY_STORE_GROUP, old)
    group = store_group(kafka_settings)
    assert group != LEGACY_STORE_GROUP
    assert all(o < 0 for o in committed(kafka_settings, group).values())  # nothing yet

    assert adopt_legacy_offsets(kafka_settings) == 2
    got = committed(kafka_settings, group)
    assert got[(samples, 0)] == 11 and got[(samples, 1)] == 7
    assert all(o < 0 for (t, _), o in got.items() if t != samples)

    # once the new group has offsets of its own, the old group's are never copied again
    commit(kafka_settings, LEGACY_STORE_GROUP, [TopicPartition(samples, 0, 20)])
    commit(kafka_settings, group, [TopicPartition(samples, 0, 15)])
    assert adopt_legacy_offsets(kafka_settings) == 0
    assert committed(kafka_settings, group)[(samples, 0)] == 15


def test_nothing_to_adopt_leaves_the_new_group_alone(kafka_settings: Settings) -> None:
    assert adopt_legacy_offsets(kafka_settings) == 0
    assert all(o < 0 for o in committed(kafka_settings, store_group(kafka_settings)).values())


def test_without_a_broker_it_gives_up_at_stop(kafka_settings: Settings) -> None:
    """A store started before its broker still stops at SIGTERM (``stop``)."""
    nowhere = kafka_settings.model_copy(
        update={
            "kafka": kafka_settings.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})
        }
    )
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    started = time.monotonic()
    assert adopt_legacy_offsets(nowhere, stop, wait_s=600) == 0
    assert time.monotonic() - started < 60  # a stop, not the 600 s wait


def test_an_offset_outside_the_partition_is_not_adopted(kafka_settings: Settings) -> None:
    """The old group is unprefixed: whoever may read the topics may commit to it. An
    offset past a partition's end (or a negative one) is not copied."""
    samples = topic_name(kafka_settings.kafka, SAMPLES)
    p = Producer({"bootstrap.servers": kafka_settings.kafka.bootstrap_servers})
    for i in range(10):
        p.produce(samples, b"x", partition=i % 2)
    assert p.flush(30) == 0
    commit(
        kafka_settings,
        LEGACY_STORE_GROUP,
        [TopicPartition(samples, 0, 3), TopicPartition(samples, 1, 10**15)],
    )
    assert adopt_legacy_offsets(kafka_settings) == 1
    got = committed(kafka_settings, store_group(kafka_settings))
    assert got[(samples, 0)] == 3 and got[(samples, 1)] < 0
