"""``BrokerOffsets.drained`` on the real broker: transaction markers and aborted records
at a partition's end leave nothing to read, an open transaction or a record does not.
(Without it, a worker never found the samples partitions quiet once the alert evaluator
had committed a transaction to them: each commit leaves a marker at the end offset that
no reader is handed, so the last windows never closed idle and the evaluator stopped.)"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Producer

from monitoring.config import KafkaSettings
from monitoring.runtime.admin import delete_topics, ensure_topics
from monitoring.runtime.faust_app import BrokerOffsets
from monitoring.runtime.topics import TopicSpec

pytestmark = pytest.mark.integration


def test_markers_and_aborted_records_at_the_end_leave_nothing_to_read(
    kafka_bootstrap: str,
) -> None:
    topic = f"drained-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    ensure_topics(kafka, [TopicSpec(topic, 1)])
    offsets = BrokerOffsets(kafka, timeout_s=10.0)
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": topic})
    plain = Producer({"bootstrap.servers": kafka_bootstrap})

    def end() -> int:
        got = offsets(topic, [0])
        assert got is not None
        return got[0]

    def end_reaches(want: int) -> int:
        # the coordinator answers a commit or an abort once it has logged its decision
        # and writes the partitions' markers after that: wait for the marker
        deadline = time.monotonic() + 30
        while (got := end()) < want and time.monotonic() < deadline:
            time.sleep(0.05)  # polling interval
        return got

    try:
        p.init_transactions(30)
        p.begin_transaction()
        for i in range(3):
            p.produce(topic, str(i).encode(), partition=0)
        p.commit_transaction(30)  # records 0-2, the commit marker at 3
        assert end_reaches(4) == 4
        assert offsets.drained(topic, 0, 3, 4)  # only the marker
        assert not offsets.drained(topic, 0, 2, 4)  # record 2 is there to read

        p.begin_transaction()
        p.produce(topic, b"open", partition=0)
        assert p.flush(30) == 0
        # the high watermark: the open transaction is there (a last stable offset, 4,
        # would hide it and every committed record after it)
        assert end() == 5
        assert not offsets.drained(topic, 0, 4, 5)
        plain.produce(topic, b"behind the open one", partition=0)
        assert plain.flush(30) == 0
        assert end() == 6
        assert not offsets.drained(topic, 0, 4, 6)

        p.abort_transaction(30)  # the aborted record at 4, a plain one at 5, the marker at 6
        assert end_reaches(7) == 7
        assert not offsets.drained(topic, 0, 4, 7)  # the plain record at 5
        assert offsets.drained(topic, 0, 6, 7)

        plain.produce(topic, b"late", partition=0)
        assert plain.flush(30) == 0
        assert end() == 8
        assert not offsets.drained(topic, 0, 6, 8)
    finally:
        delete_topics(kafka_bootstrap, [topic])
