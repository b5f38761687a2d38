"""What the worker agents' fence (``runtime.fence``) costs: checkpoint latency and memory.

``python -m monitoring.dev.fence_cost [bootstrap] [partitions] [records]`` writes the
same checkpoints (``records`` state records of about 200 bytes to each of
``partitions`` partitions) the unfenced way (one idempotent producer, one flush, as
with ``ha.enabled: false``) and the fenced way (a transaction per partition, all
partitions concurrently, as the runtime does), and prints the median and worst
latency of each, then the resident memory and threads the transactional producers
add. Topics get a fresh ``fencecost<hex>.`` prefix and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

from monitoring.config import KafkaSettings
from monitoring.runtime import topics
from monitoring.runtime.admin import delete_topics, ensure_topics
from monitoring.runtime.fence import PartitionFence
from monitoring.runtime.outputs import Outputs


def rss_mb() -> float:
    """This process's resident memory (MB), from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def threads() -> int:
    """This process's threads (librdkafka runs several per client)."""
    return len(os.listdir("/proc/self/task"))


async def measure(bootstrap: str, partitions: int, n_records: int, rounds: int = 30) -> None:
    """Print the latencies and the memory (module docstring)."""
    prefix = f"fencecost{uuid.uuid4().hex[:8]}."
    kafka = KafkaSettings(bootstrap_servers=bootstrap, topic_prefix=prefix)
    topic = topics.topic_name(kafka, topics.AGGREGATION_STATE)
    ensure_topics(kafka, [topics.TopicSpec(topic, partitions, {"cleanup.policy": "compact"})])
    try:
        records = [(b"series-%06d" % i, os.urandom(200)) for i in range(n_records)]
        outputs = Outputs(kafka)
        plain = []
        for _ in range(rounds):
            started = time.perf_counter()
            for p in range(partitions):
                for key, value in records:
                    await outputs.send(topic, key, value, partition=p)
            assert await outputs.flush()
            plain.append(time.perf_counter() - started)
        rss0, threads0 = rss_mb(), threads()
        fence = PartitionFence(kafka, topic, "fence-cost")
        started = time.perf_counter()
        for p in range(partitions):
            fence.acquire(p)
        acquire_s = (time.perf_counter() - started) / partitions
        fenced = []
        for _ in range(rounds):
            started = time.perf_counter()
            done = await asyncio.gather(*(fence.write(p, records) for p in range(partitions)))
            assert all(done)
            fenced.append(time.perf_counter() - started)
        rss1, threads1 = rss_mb(), threads()
        fence.release_all()
        ms = 1000

        def row(name: str, xs: list[float]) -> str:
            median, worst = statistics.median(xs) * ms, max(xs) * ms
            return f"{name:<28} median {median:7.1f} ms  worst {worst:7.1f} ms"

        print(f"checkpoint of {partitions} partitions x {n_records} records, {rounds} rounds")
        print(row("unfenced (one flush)", plain))
        print(row("fenced (txn per partition)", fenced))
        print(f"acquire (init_transactions)  {acquire_s * ms:7.1f} ms a partition")
        print(
            f"{partitions} transactional producers: +{rss1 - rss0:.1f} MB RSS "
            f"({(rss1 - rss0) / partitions:.2f} MB each), +{threads1 - threads0} threads"
        )
    finally:
        delete_topics(kafka, [topic])


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(
        measure(
            args[0] if args else "127.0.0.1:9092",
            int(args[1]) if len(args) > 1 else 6,
            int(args[2]) if len(args) > 2 else 200,
        )
    )
