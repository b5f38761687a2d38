"""The agents' producer (``runtime.outputs.Outputs``) against the real broker."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic

from monitoring.config import KafkaSettings
from monitoring.runtime.outputs import Outputs, OutputsLost


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


def read_all(bootstrap: str, topic: str, n: int, timeout: float = 30) -> list[Any]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-r",
                         "auto.offset.reset": "earliest"})  # fmt: skip
    consumer.subscribe([topic])
    got: list[Any] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < n:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(msg)
    consumer.close()
    return got


@pytest.mark.integration
def test_an_invalid_message_just_under_the_limit_is_dead_lettered_cut(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A consumed message just under the message limit is invalid: its dead letter
    (payload plus headers) would exceed the limit. It goes out cut to fit, with its
    original size and hash; nothing raises, and the worker's next outputs and flush go
    on. A dead letter the broker refuses anyway is counted, and the flush still passes."""
    limit = 64 * 1024
    dl, out_topic, tiny = f"{topic_prefix}dl", f"{topic_prefix}out", f"{topic_prefix}tiny"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    topics = [NewTopic(t, num_partitions=1, replication_factor=1,
                       config={"max.message.bytes": str(size)})
              for t, size in ((dl, limit), (out_topic, limit), (tiny, 2048))]  # fmt: skip
    for f in admin.create_topics(topics).values():
        f.result(30)
    out = Outputs(KafkaSettings(bootstrap_servers=kafka_bootstrap, max_message_bytes=limit))
    payload = os.urandom(limit - 300)  # incompressible; fitted its topic as consumed
    msg = SimpleNamespace(topic="src", partition=3, offset=42, key=b"key", value=payload)

    async def work() -> None:
        await out.dead_letter(dl, msg, "bad-marker", "x" * 5000, "aggregation")  # type: ignore[arg-type]
        await out.send(out_topic, b"k", b"the next output")
        assert await out.flush()
        await out.dead_letter(tiny, msg, "bad-marker", "refused", "aggregation")  # type: ignore[arg-type]
        assert await out.flush()  # counted, not OutputsLost

    asyncio.run(work())
    assert out.failed == 0 and out.dead_letters_failed == 1
    [letter] = read_all(kafka_bootstrap, dl, 1)
    headers = dict(letter.headers())
    assert letter.key() == b"key" and payload.startswith(letter.value())
    assert len(letter.value()) < limit - 1024
    assert headers["x-truncated"] == str(len(payload)).encode()
    assert headers["x-payload-sha256"] == hashlib.sha256(payload).hexdigest().encode()
    assert headers["x-reason"] == b"bad-marker" and headers["x-source-offset"] == b"42"
    assert len(headers["x-error"]) <= 4096
    assert [m.value() for m in read_all(kafka_bootstrap, out_topic, 1)] == [b"the next output"]
