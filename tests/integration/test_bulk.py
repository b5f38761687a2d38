"""Bulk delivery (``runtime.bulk``) on the real broker, in a real Faust worker: every
message once, in offset order per partition, and acks become committed offsets that a
restarted worker resumes from."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import uuid
from collections import defaultdict
from pathlib import Path

from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from monitoring.config import KafkaSettings
from monitoring.runtime.admin import ensure_topics
from monitoring.runtime.topics import TopicSpec

PARTITIONS = 6

WORKER = textwrap.dedent(
    """
    import asyncio, json, os, sys, tempfile
    from monitoring.runtime.bulk import BulkApp
    from faust.worker import Worker

    bootstrap, topic, group, stop_after, ack_upto = sys.argv[1:6]
    stop_after, ack_upto = int(stop_after), int(ack_upto)
    app = BulkApp(group, broker=f"kafka://{bootstrap}", key_serializer="raw",
                  value_serializer="raw", web_enabled=False, topic_disable_leader=True,
                  datadir=tempfile.mkdtemp(), consumer_auto_offset_reset="earliest")
    seen, calls = [], [0]

    async def handle(messages):
        calls[0] += 1
        for m in messages:
            seen.append([m.partition, m.offset, int(m.value)])
            if int(m.value) < ack_upto:
                await app.ack(m)
        if len(seen) >= stop_after:
            await app.consumer.commit()
            print(json.dumps({"seen": seen, "calls": calls[0]}), flush=True)
            os._exit(0)

    app.bulk(app.topic(topic), handle)
    Worker(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()
    """
)


def run_worker(tmp_path: Path, bootstrap: str, topic: str, group: str, stop_after: int,
               ack_upto: int) -> dict[str, object]:  # fmt: skip
    script = tmp_path / "bulk_worker.py"
    script.write_text(WORKER)
    out = subprocess.run(
        [sys.executable, str(script), bootstrap, topic, group, str(stop_after), str(ack_upto)],
        capture_output=True, timeout=120, text=True,
    )  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if '{"seen"' in line]
    assert lines, f"worker printed nothing (rc {out.returncode}): {out.stderr[-2000:]}"
    result: dict[str, object] = json.loads(lines[-1][lines[-1].index("{") :])
    return result


def fill(bootstrap: str, topic: str, n: int) -> dict[int, list[int]]:
    """``n`` messages whose values count up; returns the values per partition in order."""
    ensure_topics(KafkaSettings(bootstrap_servers=bootstrap), [TopicSpec(topic, PARTITIONS)])
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        p.produce(topic, str(i).encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0
    return {k: list(range(k, n, PARTITIONS)) for k in range(PARTITIONS)}


def fresh_topic(bootstrap: str, n: int) -> tuple[str, str, dict[int, list[int]]]:
    """A new topic filled with ``n`` messages, a new group, the values per partition."""
    topic, group = f"bulk-{uuid.uuid4().hex[:8]}", f"bulk-{uuid.uuid4().hex[:8]}"
    return topic, group, fill(bootstrap, topic, n)


def by_partition(seen: list[list[int]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for part, offset, value in seen:
        assert offset == len(out[part]), f"partition {part}: offset {offset} out of order"
        out[part].append(value)
    return dict(out)


def committed(bootstrap: str, topic: str, group: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def test_every_message_once_in_order_and_acks_committed(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    n = 30_000
    topic, group, expected = fresh_topic(kafka_bootstrap, n)
    result = run_worker(tmp_path, kafka_bootstrap, topic, group, n, ack_upto=n)
    assert by_partition(result["seen"]) == expected  # type: ignore[arg-type]
    assert result["calls"] < n / 10  # type: ignore[operator]  # runs, not messages
    assert committed(kafka_bootstrap, topic, group) == {p: len(v) for p, v in expected.items()}


def test_a_restarted_worker_resumes_after_the_acked_messages(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """Only the first half is acked: the next worker of the group reads the rest."""
    n = 6_000
    topic, group, expected = fresh_topic(kafka_bootstrap, n)
    first = run_worker(tmp_path, kafka_bootstrap, topic, group, n, ack_upto=n // 2)
    assert by_partition(first["seen"]) == expected  # type: ignore[arg-type]
    assert committed(kafka_bootstrap, topic, group) == {p: n // 2 // PARTITIONS for p in expected}
    rest = n - n // 2
    second = run_worker(tmp_path, kafka_bootstrap, topic, group, rest, ack_upto=n)
    values = sorted(v for _, _, v in second["seen"])  # type: ignore[union-attr]
    assert values == list(range(n // 2, n))


def test_a_worker_reads_committed_records_only(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The alert evaluator writes samples in its lease's transactions: what a fenced
    holder wrote is aborted and written again by the next one. A worker reading
    uncommitted records (Faust's default) aggregated both."""
    topic, group = f"bulk-{uuid.uuid4().hex[:8]}", f"bulk-{uuid.uuid4().hex[:8]}"
    ensure_topics(KafkaSettings(bootstrap_servers=kafka_bootstrap), [TopicSpec(topic, 1)])
    p = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": group})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(1000, 1010):  # a fenced holder's writes
        p.produce(topic, str(i).encode(), partition=0)
    assert p.flush(30) == 0
    p.abort_transaction(30)
    p.begin_transaction()
    for i in range(10):
        p.produce(topic, str(i).encode(), partition=0)
    p.commit_transaction(30)
    result = run_worker(tmp_path, kafka_bootstrap, topic, group, 10, ack_upto=10)
    values = [value for _, _, value in result["seen"]]  # type: ignore[attr-defined]
    assert values == list(range(10))


REJOIN_WORKER = textwrap.dedent(
    """
    import json, os, sys, tempfile
    from monitoring.runtime.bulk import BulkApp
    from faust.worker import Worker

    bootstrap, topic, group, n, ack_upto = sys.argv[1:6]
    n, ack_upto = int(n), int(ack_upto)
    app = BulkApp(group, broker=f"kafka://{bootstrap}", key_serializer="raw",
                  value_serializer="raw", web_enabled=False, topic_disable_leader=True,
                  datadir=tempfile.mkdtemp(), consumer_auto_offset_reset="earliest")
    seen, events, asked = [], [], []

    async def on_revoked(sender, revoked, **kwargs):
        events.append(["revoked", len(seen)])

    async def on_assigned(sender, assigned, **kwargs):
        events.append(["assigned", len(seen)])

    app.on_partitions_revoked.connect(on_revoked)
    app.on_partitions_assigned.connect(on_assigned)

    async def handle(messages):
        for m in messages:
            seen.append(int(m.value))
            if int(m.value) < ack_upto:
                await app.ack(m)
        if len(seen) >= n and not asked:
            await app.consumer.commit()
            asked.append(app.request_rejoin())
        if len(seen) >= n + (n - ack_upto):
            print(json.dumps({"seen": seen, "events": events, "asked": asked}), flush=True)
            os._exit(0)

    app.bulk(app.topic(topic), handle)
    Worker(app, loglevel="error", quiet=True, redirect_stdouts=False).execute_from_commandline()
    """
)


def test_a_requested_rejoin_reassigns_and_replays_from_the_committed_offsets(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """What a worker does when a partition's state writer is fenced
    (``runtime.driver``): ``BulkApp.request_rejoin`` revokes and assigns every
    partition again, and what was not acked is delivered again from the committed
    offsets."""
    n, ack_upto = 600, 300
    topic, group, _ = fresh_topic(kafka_bootstrap, n)
    script = tmp_path / "rejoin_worker.py"
    script.write_text(REJOIN_WORKER)
    out = subprocess.run(
        [sys.executable, str(script), kafka_bootstrap, topic, group, str(n), str(ack_upto)],
        capture_output=True, timeout=180, text=True,
    )  # fmt: skip
    lines = [line for line in out.stdout.splitlines() if '{"seen"' in line]
    assert lines, f"worker printed nothing (rc {out.returncode}): {out.stderr[-2000:]}"
    result = json.loads(lines[-1][lines[-1].index("{") :])
    assert result["asked"] == [True]
    after = [e for e, at in result["events"] if at >= n]
    assert after[:2] == ["revoked", "assigned"]  # the rebalance the request started
    seen = result["seen"]
    assert sorted(seen[:n]) == list(range(n))
    assert sorted(seen[n:]) == list(range(ack_upto, n))  # the unacked ones, once more


def test_a_topic_that_appears_after_the_worker_started_is_read(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A subscribed topic the broker does not report at the group's join (a broker just
    restarted and still loading its metadata; here: a topic created after the worker)
    is assigned at the next metadata refresh, seconds later, not aiokafka's 5 minutes."""
    topic, group = f"bulk-{uuid.uuid4().hex[:8]}", f"bulk-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "bulk_worker.py"
    script.write_text(WORKER)
    n = 600
    p = subprocess.Popen(
        [sys.executable, str(script), kafka_bootstrap, topic, group, str(n), str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
        deadline = time.monotonic() + 120

        def joined() -> bool:  # the worker is in its group, with no partition to read
            got = admin.describe_consumer_groups([group])[group].result(10)
            return got.state == ConsumerGroupState.STABLE and bool(got.members)

        while not joined():
            assert p.poll() is None and time.monotonic() < deadline, "the worker never joined"
            time.sleep(0.5)  # polling interval
        expected = fill(kafka_bootstrap, topic, n)
        out, err = p.communicate(timeout=120)  # aiokafka's default would take 300 s
    finally:
        p.kill()
    lines = [line for line in out.splitlines() if '{"seen"' in line]
    assert lines, f"worker printed nothing (rc {p.returncode}): {err[-2000:]}"
    seen = json.loads(lines[-1][lines[-1].index("{") :])["seen"]
    assert by_partition(seen) == expected
