"""Consumer lag from the broker: committed offsets against high watermarks.

What ``kafka-consumer-groups.sh --describe`` prints, through the admin client: for each
group, the offsets it committed (``ListConsumerGroupOffsets``) and each partition's log
start and end (``ListOffsets``); ``ops.status.lag_of`` does the arithmetic. A group
that never committed on a partition of a topic it reads shows no row there (the broker
knows nothing of it); ``lag`` reports the partitions it has offsets for.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from monitoring.ops.status import LagRow, lag_of

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


def committed_offsets(
    admin: AdminClient, group: str, timeout_s: float
) -> dict[tuple[str, int], int | None]:
    """``{(topic, partition): committed}`` of ``group`` (None where it has no offset)."""
    futures = admin.list_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group)], request_timeout=timeout_s
    )
    try:
        got = futures[group].result(timeout=timeout_s)
    except (KafkaException, TimeoutError) as e:
        raise LagUnavailable(f"offsets of group {group}: {e}") from None
    out: dict[tuple[str, int], int | None] = {}
    for tp in (got.topic_partitions or [])[:MAX_PARTITIONS]:
        out[(tp.topic, tp.partition)] = tp.offset if tp.offset >= 0 else None
    return out


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
) -> list[LagRow]:
    """One row per partition each group has an offset for, on topics starting with
    ``topic_prefix``, sorted. With ``only``: those partitions, a partition the group has
    not committed on counted from its log start (where the group's consumer begins,
    ``auto.offset.reset=earliest``): a process that owns it has all of it to read."""
    wanted = None if only is None else set(only)
    committed: dict[str, dict[tuple[str, int], int | None]] = {}
    for g in groups[:MAX_GROUPS]:
        offs = committed_offsets(admin, g, timeout_s)
        committed[g] = {
            tp: o
            for tp, o in offs.items()
            if tp[0].startswith(topic_prefix) and (wanted is None or tp in wanted)
        }
        for tp in sorted(wanted or ()):
            if tp[0].startswith(topic_prefix):
                committed[g].setdefault(tp, None)
    marks = watermarks(admin, {tp for c in committed.values() for tp in c}, timeout_s)
    rows = [
        LagRow(g, t, p, o, marks[(t, p)][1], lag_of(o, *marks[(t, p)]))
        for g, offs in committed.items()
        for (t, p), o in offs.items()
        if (t, p) in marks
    ]
    return sorted(rows)
