"""Read one partition of a compacted changelog topic back into a table.

Every stateful process keeps its state as keyed records (latest value per key wins,
``None`` deletes) in a compacted topic: the stream agents one partition per source
partition (``runtime.partition_state``), the alert evaluator and the notifier one
partition (``runtime.state_chunks``). At start or on assignment the partition is read
from the beginning to the high watermark, committed records only, into a table.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from monitoring.runtime.admin import with_retries
from monitoring.runtime.kafka_client import KafkaTarget, client_config
from monitoring.runtime.topics import CHANGELOG_READER, group_name


def read_table(
    kafka: KafkaTarget, topic: str, partition: int, timeout_s: float = 60.0
) -> dict[bytes, bytes]:
    """Latest value per key in ``topic[partition]`` (deleted keys absent)."""
    consumer = Consumer(
        client_config(
            kafka,
            **{
                "group.id": group_name(kafka, CHANGELOG_READER),  # never commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "fetch.max.bytes": 64 * 1024 * 1024,
            },
        )
    )
    try:
        tp = TopicPartition(topic, partition)
        low, high = with_retries(
            lambda: consumer.get_watermark_offsets(tp, timeout=timeout_s),
            what=f"watermarks {topic}",
        )
        table: dict[bytes, bytes] = {}
        if high <= low:
            return table
        consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)])
        position = low
        deadline = time.monotonic() + timeout_s
        while position < high:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: stuck at {position} < {high}")
            # short polls: consume() waits for a full batch until its timeout
            for m in consumer.consume(10_000, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        position = max(position, m.offset() or 0)
                        continue
                    raise KafkaException(err)
                key: Any = m.key()
                value = m.value()
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
                position = (m.offset() or 0) + 1
        return table
    finally:
        consumer.close()
