"""The agents' producer (``streams.outputs.Outputs``) against the real broker."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from monitoring.config import KafkaSettings
from monitoring.streams.outputs import Outputs, OutputsLost


@pytest.mark.integration
def test_outputs_count_a_record_the_broker_refuses(kafka_bootstrap: str, topic_prefix: str) -> None:
    """Delivery reports come back for failures only: delivered records count nothing,
    a refused one is counted and makes ``flush`` raise."""
    topic = f"{topic_prefix}outputs-small"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    new = NewTopic(topic, num_partitions=1, replication_factor=1,
                   config={"max.message.bytes": "4096"})  # fmt: skip
    admin.create_topics([new])[topic].result(30)
    out = Outputs(KafkaSettings(bootstrap_servers=kafka_bootstrap))

    async def send_all() -> None:
        await out.send(topic, b"a", b"small one", partition=0, headers=[("h", b"v")])
        await out.send(topic, b"b", b"small two")
        assert await out.flush()
        assert out.failed == 0
        await out.send(topic, b"c", os.urandom(60_000))  # incompressible, over 4 KiB
        with pytest.raises(OutputsLost, match=r"^1 records failed"):
            await out.flush()

    asyncio.run(send_all())
    assert out.failed == 1
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(got) < 3:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append((msg.key(), msg.value(), msg.headers()))
        elif got and msg is None:
            break  # read everything there is
    consumer.close()
    assert got == [(b"a", b"small one", [("h", b"v")]), (b"b", b"small two", None)]
