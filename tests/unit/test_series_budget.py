"""A bound on the series of every partition one worker holds (issue 13, finding 13):
``aggregation.max_series_per_worker`` and ``anomaly.max_series_per_worker``
(``monitoring.metrics.budget.SeriesBudget``).

Over any sequence of assignments, revocations, takeovers of partitions that grew on
another worker, checkpoints, expiry and new series: the series of the partitions a
worker holds never pass the bound by new series (only by series restored with a
partition, which are kept whole), each refusal is the one the rule says, dead-lettered
with reason ``cardinality`` and counted exactly; a revoked partition's series stop
counting, through the runtime's ``release``."""

from __future__ import annotations

import time
from typing import Any

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from monitoring.agents.aggregation import AggregationAgent
from monitoring.agents.anomaly import AnomalyAgent
from monitoring.anomaly.partition import PartitionScorers
from monitoring.anomaly.scorer import SeriesScorer
from monitoring.config import Settings
from monitoring.metrics.aggregator import CHECKPOINT_KEY, PartitionAggregator
from monitoring.metrics.budget import SeriesBudget
from monitoring.metrics.samples import series_key
from monitoring.runtime.agent import Emit
from monitoring.runtime.memory import MemoryMessage, MemoryRuntime
from monitoring.wire.codec import AvroCodec

CODEC = AvroCodec.from_directory()
SAMPLES = "monitoring.metrics.samples"
LIMIT = 10  # the worker's bound in these tests
MAX_SERIES, PER_METRIC = 8, 6  # a partition's own bounds
PARTITIONS = 3
META = CHECKPOINT_KEY.encode()


def key(metric: int, ident: int) -> str:
    return series_key(f"m{metric}", {"id": str(ident)})


def batch(keys: list[str], ts: int) -> bytes:
    n = len(keys)
    return CODEC.encode("monitoring.MetricBatch", {
        "source": "test", "series": keys, "kinds": [], "units": [],
        "series_index": list(range(n)), "timestamps_ms": [ts] * n, "values": [1.0] * n,
    })  # fmt: skip


def agent(limit: int) -> AggregationAgent:
    s = Settings(aggregation={  # type: ignore[arg-type]
        "max_series": MAX_SERIES, "max_series_per_metric": PER_METRIC,
        "max_series_per_worker": limit,
    })  # fmt: skip
    return AggregationAgent(s, CollectorRegistry(), CODEC)


def expected_refusals(
    state: PartitionAggregator, room: int, keys: list[str]
) -> tuple[list[str], int]:
    """The oracle: new series in message order, refused by the partition's bounds or,
    past them, by the worker's room; and how many of them the worker's bound refused."""
    held = set(state._slot_of)
    total = len(held)
    per_metric = dict(state._per_metric)
    refused: list[str] = []
    by_worker = new = 0
    for k in dict.fromkeys(keys):
        if k in held:
            continue
        held.add(k)
        name = k.split("{")[0]
        if total >= MAX_SERIES or per_metric.get(name, 0) >= PER_METRIC:
            refused.append(k)
        elif new >= room:
            refused.append(k)
            by_worker += 1
        else:
            total += 1
            new += 1
            per_metric[name] = per_metric.get(name, 0) + 1
    return refused, by_worker


def apply(table: dict[bytes, bytes], records: list[tuple[bytes, bytes | None]] | None) -> None:
    """A compacted changelog: the latest record of a key wins, None deletes it."""
    for k, v in records or ():
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v


event_st = st.one_of(
    st.tuples(st.just("assign"), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("revoke"), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("elsewhere"), st.integers(0, PARTITIONS - 1), st.integers(1, 8)),
    st.tuples(
        st.just("message"),
        st.integers(0, PARTITIONS - 1),
        st.lists(st.tuples(st.integers(0, 2), st.integers(0, 40)), min_size=1, max_size=12),
    ),
    st.tuples(st.just("checkpoint"), st.integers(0, PARTITIONS - 1)),
    st.tuples(st.just("advance"), st.integers(1, 400)),
)


@settings(max_examples=examples(150), deadline=None)
@given(st.lists(event_st, min_size=1, max_size=50))
def test_new_series_never_pass_the_worker_bound_and_refusals_are_exact(
    events: list[tuple[Any, ...]],
) -> None:
    worker = agent(LIMIT)
    budget = worker.budget
    tables: dict[int, dict[bytes, bytes]] = {p: {} for p in range(PARTITIONS)}
    offsets = dict.fromkeys(range(PARTITIONS), 0)
    owned = {p: worker.restore(p, {}) for p in (0, 1)}  # assigned at the start
    now = int(time.time() * 1000) - 3 * 3_600_000  # room to advance, never in the future
    fresh = iter(range(1000, 10**6))  # series made on the other worker
    by_worker = 0
    for event in events:
        kind, p = event[0], event[1]
        if kind == "assign" and p not in owned:
            owned[p] = worker.restore(p, dict(tables[p]))
            # restored series are kept whole, whatever the room, and count
            assert owned[p].series_count == len([k for k in tables[p] if k != META])
        elif kind == "revoke" and p in owned:
            apply(tables[p], worker.snapshot(owned[p]))
            worker.release(p, owned.pop(p))
        elif kind == "elsewhere" and p not in owned:
            # another worker (its partitions' bounds only) held p and made new series
            other = agent(10**9)
            state = other.restore(p, dict(tables[p]))
            keys = [key(next(fresh) % 3, next(fresh)) for _ in range(event[2])]
            other.handle(msg(p, offsets[p], keys, now), state, Emit())
            offsets[p] += 1
            apply(tables[p], other.snapshot(state))
        elif kind == "message" and p in owned:
            state, keys = owned[p], [key(m, i) for m, i in event[2]]
            used, room = budget.used, budget.room()
            want, want_by_worker = expected_refusals(state, room, keys)
            refused_before = state.refused_count
            out = Emit()
            worker.handle(msg(p, offsets[p], keys, now), state, out)
            offsets[p] += 1
            assert budget.used <= max(LIMIT, used)  # never past the bound by new series
            assert budget.used - used <= room
            cardinality = [d for d in out.dead if d.reason == "cardinality"]
            assert len(cardinality) == (1 if want else 0)
            assert state.refused_count - refused_before == sum(k in want for k in keys)
            by_worker += want_by_worker
        elif kind == "checkpoint" and p in owned:
            apply(tables[p], worker.snapshot(owned[p]))  # may expire closed series
        elif kind == "advance":
            now += event[1] * 1000
        assert budget.partitions == sorted(owned)
        assert budget.used == sum(s.series_count for s in owned.values())
        assert budget.refused == by_worker
    health = worker.health(owned)
    assert health["series_refused_by_worker_limit"] == by_worker
    assert health["series"] == budget.used


def msg(p: int, offset: int, keys: list[str], ts: int) -> MemoryMessage:
    return MemoryMessage(SAMPLES, p, offset, b"batch", batch(keys, ts), ts / 1000)


def test_a_takeover_over_the_bound_keeps_its_series_and_refuses_new_ones_until_they_expire() -> (
    None
):
    """Two partitions of 6 series restored under a bound of 10: all 12 kept, no new
    series until expiry brings the total under 10; then exactly the room is admitted."""
    worker, other = agent(LIMIT), agent(10**9)
    start = int(time.time() * 1000) - 3_600_000
    tables: dict[int, dict[bytes, bytes]] = {0: {}, 1: {}}
    for p in (0, 1):
        state = other.restore(p, {})
        other.handle(msg(p, 0, [key(p, i) for i in range(6)], start), state, Emit())
        apply(tables[p], other.snapshot(state))
    a, b = worker.restore(0, tables[0]), worker.restore(1, tables[1])
    assert (a.series_count, b.series_count, worker.budget.used) == (6, 6, 12)
    out = Emit()
    worker.handle(msg(0, 1, [key(0, 0), key(2, 100)], start), a, out)  # one old, one new
    assert [d.reason for d in out.dead] == ["cardinality"] and a.refused_count == 1
    assert worker.budget.refused == 1 and worker.budget.used == 12
    # 10 minutes later on partition 1 (one series goes on), its windows close and the
    # rest expire: past the counter horizon, at the checkpoint after the one that
    # wrote their closed windows (a checkpoint is taken when something changed)
    later = start + 600_000
    worker.handle(msg(1, 1, [key(1, 0)], later), b, Emit())
    apply(tables[1], worker.snapshot(b))
    assert b.series_count == 6
    worker.handle(msg(1, 2, [key(1, 0)], later + 1_000), b, Emit())
    apply(tables[1], worker.snapshot(b))
    assert b.series_count == 1 and worker.budget.used == 7  # 5 expired
    keys = [key(2, 200 + i) for i in range(5)]
    out = Emit()
    worker.handle(msg(1, 3, keys, later + 2_000), b, out)
    assert b.series_count == 1 + 3 and worker.budget.used == LIMIT  # the room: 3
    assert out.dead[0].detail.startswith("2 new series over the series limits")
    assert worker.budget.refused == 3


async def test_a_revoked_partition_stops_counting_through_the_runtime() -> None:
    """The runtime calls ``release`` on revocation: the worker's room comes back, and a
    partition assigned again counts what it restores."""
    rt: MemoryRuntime[Any] = MemoryRuntime(lambda: agent(LIMIT))
    now = int(time.time() * 1000) - 60_000
    for p in (0, 1):
        rt.produce(SAMPLES, batch([key(p, i) for i in range(6)], now), p, b"batch", now / 1000)
    await rt.assign([0, 1])
    await rt.run_until_idle()
    budget = rt.agent.budget
    assert budget.used == LIMIT and budget.partitions == [0, 1]
    assert rt.agent.health(rt.driver.view())["series"] == LIMIT
    assert len([d for d in rt.dead_letters() if d.reason == "cardinality"]) == 1
    await rt.revoke([1])
    assert budget.partitions == [0] and budget.used == 6
    await rt.assign([1])
    await rt.run_until_idle()
    assert budget.partitions == [0, 1] and budget.used == LIMIT  # 4 restored, kept


def test_anomaly_detectors_share_the_worker_bound() -> None:
    """``anomaly.max_series_per_worker``: the partitions' detectors together stay at
    the bound; refused points are counted; restored detectors are kept and count."""
    s = Settings(anomaly={"max_series_per_worker": 4})  # type: ignore[arg-type]
    worker = AnomalyAgent(s, CollectorRegistry(), CODEC)
    a, b = worker.restore(0, {}), worker.restore(1, {})
    for i in range(3):
        assert a.admits(f"a{i}")
        a.process(i, f"a{i}", "m", 1_000, 1.0)
    assert b.admits("b0")
    b.process(0, "b0", "m", 1_000, 1.0)
    assert not b.admits("b1") and not a.admits("a9") and a.admits("a0")
    assert worker.budget.refused == 2 and worker.health({0: a, 1: b})["series"] == 4
    table = {k.encode(): v for k, v in a.checkpoint() if v is not None}
    worker.release(0, a)
    assert worker.budget.used == 1 and b.admits("b1")
    b.process(1, "b1", "m", 1_000, 1.0)
    again = worker.restore(0, table)  # 3 restored on top of 2: kept, over the bound
    assert again.series_count == 3 and worker.budget.used == 5
    assert not again.admits("a3") and not b.admits("b2")


def test_a_budget_lets_go_only_of_the_state_it_holds() -> None:
    """A stale ``leave`` (a state replaced by a later restore) changes nothing."""
    budget = SeriesBudget(5)
    old = PartitionScorers(lambda name: SeriesScorer(), 60_000, budget=budget)
    new = PartitionScorers(lambda name: SeriesScorer(), 60_000, budget=budget)
    budget.join(0, old)
    budget.join(0, new)
    budget.leave(0, old)
    assert budget.partitions == [0]
    budget.leave(0, new)
    assert budget.partitions == [] and budget.room() == 5


def test_log_services_share_the_worker_bound() -> None:
    """The sibling in the logs agent: ``logs.max_services_per_worker`` over every logs
    partition a worker holds; a new service beyond it is refused (``cardinality``, in
    the single-record and the batch path) and makes no state; restored services are
    kept and count; a revoked partition's services stop counting."""
    from monitoring.agents.logs import LogAgent
    from monitoring.logs.batch import LogColumns
    from monitoring.logs.records import InvalidLog

    t = int(time.time() * 1000)

    def record(service: str) -> dict[str, object]:
        return {"timestamp_ms": t, "service": service, "level": "info", "message": "up"}

    def lines(service: str, n: int = 2) -> LogColumns:
        return LogColumns(service, "h", [t] * n, ["info"] * n, [""] * n, ["done"] * n,
                          [""] * n, [""] * n, [""] * n, {})  # fmt: skip

    s = Settings(logs={"max_services_per_worker": 3})  # type: ignore[arg-type]
    worker = LogAgent(s, CollectorRegistry(), CODEC)
    a, b = worker.restore(0, {}), worker.restore(1, {})
    assert a.logs.process(0, record("a1"), t) is not None
    assert a.logs.process(1, record("a2"), t) is not None
    assert b.logs.process_batch(0, lines("b1"), t).stored is not None  # type: ignore[union-attr]
    try:
        b.logs.process(1, record("b2"), t)
        raise AssertionError("a fourth service was admitted")
    except InvalidLog as e:
        assert e.reason == "cardinality" and "logs.max_services_per_worker" in str(e)
    out = a.logs.process_batch(2, lines("a3"), t)
    assert out is not None and out.stored is None
    assert [err.reason for _, err in out.rejected] == ["cardinality"] * 2
    assert sorted(a.logs.services) == ["a1", "a2"] and sorted(b.logs.services) == ["b1"]
    assert worker.health({0: a, 1: b})["services_refused_by_worker_limit"] == 2
    records, meta = a.logs.checkpoint()
    table = {k.encode(): v for k, v in records if v is not None}
    table[META] = meta
    worker.release(0, a)
    assert b.logs.process(2, record("b2"), t) is not None  # room again
    again = worker.restore(0, table)  # 2 restored on top of 2: kept, over the bound
    assert sorted(again.logs.services) == ["a1", "a2"] and worker.budget.used == 4
    assert worker.budget.room() == 0


def test_model_label_sets_are_bounded_per_partition_and_per_worker() -> None:
    """The sibling in the model metrics agent: every label set of a prediction (model,
    version, its labels) got River state that was never evicted, so a request id in a
    prediction's labels grew it without end. Now ``model_metrics.max_series`` per
    partition and ``max_series_per_worker``: a prediction of a new label set beyond
    either is dead-lettered (``cardinality``) and makes no state and no count; known
    label sets go on; restored ones are kept and count."""
    from monitoring.agents.model_metrics import ModelMetricsAgent
    from monitoring.mlops.events import PREDICTION

    t = int(time.time() * 1000)
    s = Settings(model_metrics={"max_series": 2, "max_series_per_worker": 3})  # type: ignore[arg-type]
    worker = ModelMetricsAgent(s, CollectorRegistry(), CODEC)
    topic = worker.predictions_topic

    def predict(p: int, offset: int, request: str, state: Any) -> Emit:
        rec = {
            "prediction_id": f"{p}-{offset}", "model": "churn", "version": "1",
            "timestamp_ms": t, "predicted_class": "pos", "predicted_value": None,
            "latency_ms": 1.0, "features": {"x": 1.0}, "labels": {"request": request},
        }  # fmt: skip
        out = Emit()
        worker.handle(MemoryMessage(topic, p, offset, b"k", CODEC.encode(PREDICTION, rec),
                                    t / 1000), state, out)  # fmt: skip
        return out

    a, b = worker.restore(0, {}), worker.restore(1, {})
    assert not predict(0, 0, "r0", a).dead and not predict(0, 1, "r1", a).dead
    out = predict(0, 2, "r2", a)  # the partition's bound
    assert [d.reason for d in out.dead] == ["cardinality"] and not out.sends
    assert not predict(1, 0, "r3", b).dead
    out = predict(1, 1, "r4", b)  # the worker's bound: 3 label sets held
    assert [d.reason for d in out.dead] == ["cardinality"] and not out.sends
    assert not predict(0, 3, "r0", a).dead  # a known label set goes on
    assert a.counts["predictions"] == 3 and b.counts["predictions"] == 1
    health = worker.health({0: a, 1: b})
    assert health["series"] == 3 and health["series_refused_by_worker_limit"] == 1
    table = dict(a.checkpoint())
    worker.release(0, a)
    assert not predict(1, 2, "r4", b).dead  # room again
    again = worker.restore(0, {k: v for k, v in table.items() if v is not None})
    assert again.series_count == 2 and worker.budget.used == 4  # kept, over the bound
    assert [d.reason for d in predict(1, 3, "r5", b).dead] == ["cardinality"]
