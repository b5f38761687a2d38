"""Consumer lag from the broker: committed offsets against high watermarks.

What ``kafka-consumer-groups.sh --describe`` prints: for each group, the offsets it
committed and each partition's log start and end (the admin client's ``ListOffsets``);
``ops.status.lag_of`` does the arithmetic. A group that never committed on a partition
of a topic it reads shows no row there (the broker knows nothing of it); ``lag``
reports the partitions it has offsets for.

Committed offsets are read by a consumer carrying the group's id (it never subscribes,
so it never joins the group), not by the admin client's ``ListConsumerGroupOffsets``:
librdkafka (2.16) dereferences the admin client's missing consumer group when the
broker answers that call with NOT_COORDINATOR, as a fresh broker does while it loads
``__consumer_offsets``, and the whole process dies of SIGSEGV (librdkafka #5040,
confluent-kafka-python #1982). A consumer has a group and looks the coordinator up again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from monitoring.ops.status import LagRow, lag_of
from monitoring.runtime.kafka_client import KafkaTarget, client_config

MAX_GROUPS = 64  # groups described per call, at most
MAX_PARTITIONS = 4096  # partitions per call, at most


class LagUnavailable(RuntimeError):
    """The broker did not answer an offsets request in time; the message says which."""


def list_groups(admin: AdminClient, prefixes: Sequence[str], timeout_s: float) -> list[str]:
    """Consumer groups whose id starts with one of ``prefixes`` (sorted, at most
    ``MAX_GROUPS``)."""
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout_s).result(timeout=timeout_s)
    except (KafkaException, TimeoutError) as e:
        raise LagUnavailable(f"listing consumer groups: {e}") from None
    ids = sorted({g.group_id for g in listed.valid if g.group_id.startswith(tuple(prefixes))})
    return ids[:MAX_GROUPS]


class CommittedOffsets:
    """Reads groups' committed offsets through one consumer per group (kept, at most
    ``MAX_GROUPS``; ``close`` them). The consumers never subscribe, commit or fetch."""

    def __init__(self, kafka: KafkaTarget) -> None:
        self.kafka = kafka
        self._consumers: dict[str, Consumer] = {}

    def _consumer(self, group: str) -> Consumer:
        c = self._consumers.get(group)
        if c is None:
            if len(self._consumers) >= MAX_GROUPS:
                self._consumers.pop(next(iter(self._consumers))).close()
            conf = client_config(
                self.kafka,
                **{
                    "group.id": group,
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "log_level": 0,
                    "log.connection.close": False,
                },
            )
            c = self._consumers[group] = Consumer(conf)
        return c

    def of(
        self, group: str, tps: Iterable[tuple[str, int]], timeout_s: float
    ) -> dict[tuple[str, int], int | None]:
        """``{(topic, partition): committed}`` of ``group`` on ``tps`` (None where it
        has no offset); LagUnavailable when the broker does not answer in time."""
        wanted = [TopicPartition(t, p) for t, p in sorted(set(tps))[:MAX_PARTITIONS]]
        if not wanted:
            return {}
        try:
            got = self._consumer(group).committed(wanted, timeout=timeout_s)
        except (KafkaException, RuntimeError) as e:
            raise LagUnavailable(f"offsets of group {group}: {e}") from None
        return {(tp.topic, tp.partition): tp.offset if tp.offset >= 0 else None for tp in got}

    def close(self) -> None:
        """Close every consumer (they hold connections and a thread each)."""
        while self._consumers:
            self._consumers.popitem()[1].close()


def topic_partitions(
    admin: AdminClient, topic_prefix: str, timeout_s: float
) -> list[tuple[str, int]]:
    """Every partition of the topics starting with ``topic_prefix`` (internal ``__``
    topics left out), sorted, at most ``MAX_PARTITIONS``."""
    try:
        md = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise LagUnavailable(f"listing topics: {e}") from None
    tps = sorted(
        (name, p)
        for name, t in md.topics.items()
        if name.startswith(topic_prefix) and not name.startswith("__") and t.error is None
        for p in t.partitions
    )
    return tps[:MAX_PARTITIONS]


def watermarks(
    admin: AdminClient, tps: Iterable[tuple[str, int]], timeout_s: float
) -> dict[tuple[str, int], tuple[int, int]]:
    """``{(topic, partition): (log start, high watermark)}``."""
    keys = sorted(set(tps))[:MAX_PARTITIONS]
    if not keys:
        return {}
    out: dict[tuple[str, int], list[int]] = {k: [0, 0] for k in keys}
    for i, spec in enumerate((OffsetSpec.earliest(), OffsetSpec.latest())):
        req = {TopicPartition(t, p): spec for t, p in keys}
        try:
            for tp, fut in admin.list_offsets(req, request_timeout=timeout_s).items():
                out[(tp.topic, tp.partition)][i] = fut.result(timeout=timeout_s).offset
        except (KafkaException, TimeoutError) as e:
            raise LagUnavailable(f"offsets of {len(keys)} partitions: {e}") from None
    return {k: (v[0], v[1]) for k, v in out.items()}


def lag(
    admin: AdminClient,
    groups: Sequence[str],
    timeout_s: float,
    topic_prefix: str = "",
    only: Iterable[tuple[str, int]] | None = None,
    *,
    offsets: CommittedOffsets,
) -> list[LagRow]:
    """One row per partition each group has an offset for, on topics starting with
    ``topic_prefix``, sorted. With ``only``: those partitions, a partition the group has
    not committed on counted from its log start (where the group's consumer begins,
    ``auto.offset.reset=earliest``): a process that owns it has all of it to read.
    ``offsets`` reads the committed offsets (its consumers are kept for the next call)."""
    wanted = None if only is None else {tp for tp in only if tp[0].startswith(topic_prefix)}
    tps = sorted(wanted) if wanted is not None else topic_partitions(admin, topic_prefix, timeout_s)
    committed: dict[str, dict[tuple[str, int], int | None]] = {}
    for g in groups[:MAX_GROUPS]:
        offs = offsets.of(g, tps, timeout_s)
        committed[g] = {tp: o for tp, o in offs.items() if o is not None or wanted is not None}
    marks = watermarks(admin, {tp for c in committed.values() for tp in c}, timeout_s)
    rows = [
        LagRow(g, t, p, o, marks[(t, p)][1], lag_of(o, *marks[(t, p)]))
        for g, offs in committed.items()
        for (t, p), o in offs.items()
        if (t, p) in marks
    ]
    return sorted(rows)
