"""Every persisted state version of every agent (but the anomaly agent's, tested in
``test_anomaly_state_golden``) restores with today's code and goes on as the original.

The snapshots in ``tests/golden`` were written once by the code of their version
(``golden/make.py``). Each test restores one as the agent does, checks what can be
checked directly (offsets, open windows, pending entries), then feeds the restored
state and a fresh state (the same inputs replayed with today's code) the same new
messages: their outputs must be equal, and the exact fields equal to an oracle where
one is simple. A library upgrade (River, drain3) or a format change that breaks a
snapshot fails here, not at a worker's restart.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import pytest
from golden import make, read

from monitoring.agents.alerting import STATE_KEY
from monitoring.logs.analyzer import PartitionLogs
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.checkpoint import pack_series, unpack_series
from monitoring.mlops.events import Label, Prediction
from monitoring.mlops.monitor import ModelMonitor
from monitoring.runtime.state_chunks import join

# -- aggregation ----------------------------------------------------------------------
COUNTER_FIELDS = ("first", "increase", "resets")


def without_counters(a: Aggregate) -> dict[str, Any]:
    """An aggregate's record less the counter fields (which a v1 state did not keep)."""
    return {k: v for k, v in a.to_record().items() if k not in COUNTER_FIELDS}


@pytest.mark.parametrize("version", [1, 2])
def test_aggregation_restores_its_open_windows_exactly(version: int) -> None:
    table = read("aggregation", version)
    for key, value in table.items():
        if key.startswith(b"\0"):
            continue
        state = unpack_series(value)
        if version == 2:
            assert pack_series(state) == value  # every field read back
        else:  # read without the carry and the windows' counter fields
            assert math.isnan(state["carry"]) and "increase" not in state["windows"][0]
    agent = make.aggregation_agent()
    restored = agent.restore(0, dict(table))
    fresh = make.aggregation_state(make.aggregation_agent())
    assert restored.checkpoint_offset == 49
    assert restored.watermark_ms == fresh.watermark_ms
    assert restored.open_windows == fresh.open_windows > 0

    # a message already applied is skipped; the windows close as the original's do
    offset, samples = make.aggregation_inputs()[-1]
    assert not restored.process(offset, samples).closed
    got = {(a.series, a.window_ms, a.window_start_ms): a for a in restored.close_idle()}
    want = {(a.series, a.window_ms, a.window_start_ms): a for a in fresh.close_idle()}
    if version == 1:  # no counter state: those windows close without counter fields
        assert {(a.first, a.increase, a.resets) for a in got.values()} == {(None, None, None)}
        assert {k: without_counters(a) for k, a in got.items()} == {
            k: without_counters(a) for k, a in want.items()
        }
    else:
        assert {k: a.to_record() for k, a in got.items()} == {
            k: a.to_record() for k, a in want.items()
        }
        assert all(a.increase is not None for a in got.values())
    values: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    for _, batch in make.aggregation_inputs():
        for s in batch:
            for w in (10_000, 60_000):
                values[(s.series, w, s.timestamp_ms - s.timestamp_ms % w)].append(s.value)
    assert any(len(values[k]) > 256 for k in got)  # a sketch among them
    for k, a in got.items():
        v = values[k]
        assert (a.count, a.min, a.max, a.last) == (len(v), min(v), max(v), v[-1])
        assert a.sum == pytest.approx(sum(v))


def test_aggregation_v2_is_still_what_the_agent_writes() -> None:
    agent = make.aggregation_agent()
    records = agent.snapshot(make.aggregation_state(agent))
    assert dict(records) == read("aggregation", 2)


def test_aggregation_v1_with_a_refused_count_restores_it() -> None:
    table = read("aggregation", 1, "refused")
    restored = make.aggregation_agent(**make.REFUSING).restore(0, dict(table))
    fresh = make.aggregation_state(make.aggregation_agent(**make.REFUSING))
    assert restored.refused_count == fresh.refused_count == 10  # r2's ten samples
    assert restored.refused_published == 0  # this layout held the count alone
    assert restored.series_count == 2
    assert [without_counters(a) for a in restored.close_idle()] == [
        without_counters(a) for a in fresh.close_idle()
    ]


def test_aggregation_v1_with_the_published_count_goes_on_publishing() -> None:
    table = read("aggregation", 1, "refused_published")
    restored = make.aggregation_agent(**make.REFUSING).restore(0, dict(table))
    assert (restored.refused_count, restored.refused_published) == (10, 5)
    before, now = restored.refused_samples(0, make.BASE_MS + 30_000, 10_000)
    assert (before.value, now.value) == (5.0, 10.0)  # the change since the snapshot's
    fresh = make.aggregation_state(make.aggregation_agent(**make.REFUSING))
    assert [without_counters(a) for a in restored.close_idle()] == [
        without_counters(a) for a in fresh.close_idle()
    ]


def test_aggregation_v2_closed_idle_keeps_what_the_idle_close_closed() -> None:
    """An idle close's event time is in the partition record: after a restore, a sample
    just after it is on time for the 10 s windows, late for the minute closed idle."""
    restored = make.aggregation_agent().restore(0, dict(read("aggregation", 2, "idle")))
    fresh = make.aggregation_state(make.aggregation_agent())
    fresh.close_idle()
    assert restored.idle_event_ms == fresh.idle_event_ms == make.BASE_MS + 24_505
    assert restored.watermark_ms == fresh.watermark_ms == make.BASE_MS + 30_000
    assert restored.open_windows == 0
    for agg in (restored, fresh):
        [late] = agg.process(50, [make.aggregation_inputs()[0][1][0]._replace(
            timestamp_ms=make.BASE_MS + 31_000)]).late  # fmt: skip
        assert late.window_sizes_ms == (60_000,)


# -- logs -----------------------------------------------------------------------------
def restore_logs(version: int) -> PartitionLogs:
    """As the log agent restores a partition."""
    logs: PartitionLogs = make.log_agent().restore(0, read("logs", version)).logs
    assert logs.restore_errors == []
    return logs


@pytest.mark.parametrize("version", [1, 2])
def test_logs_state_restores_templates_counts_and_offsets(version: int) -> None:
    restored = restore_logs(version)
    fresh = make.log_state(make.log_agent().restore(0, {}).logs)
    assert restored.checkpoint_offset == 39
    assert sorted(restored.services) == ["api", "db"]
    inputs = make.log_inputs()
    assert restored.process(12, inputs[12], 0) is None  # applied before the snapshot
    news = [
        {**inputs[4], "timestamp_ms": inputs[-1]["timestamp_ms"] + 100,
         "message": "user 77 logged in from 10.0.0.77"},  # a known template
        {**inputs[5], "timestamp_ms": inputs[-1]["timestamp_ms"] + 200},  # a known error
        {**inputs[1], "timestamp_ms": inputs[-1]["timestamp_ms"] + 300,
         "message": "cache warmed in 5 s"},  # a new template
    ]  # fmt: skip
    for k, rec in enumerate(news, start=40):
        r, f = (
            restored.process(k, rec, rec["timestamp_ms"]),
            fresh.process(k, rec, rec["timestamp_ms"]),
        )
        assert r is not None and f is not None
        assert (r.template_id, r.events, r.samples) == (f.template_id, f.events, f.samples)
    assert restored.process(40, news[0], 0) is None
    assert restored.close_services(["api", "db"]) == fresh.close_services(["api", "db"])


# -- model metrics --------------------------------------------------------------------
def model_steps() -> list[tuple[int, int, Any]]:
    """New messages after the snapshot: labels of pending predictions, a new pair."""
    ts = make.BASE_MS + 61_000
    return [
        (1, 60, Label("c9", ts, true_class="b")),  # a prediction pending in the snapshot
        (1, 61, Label("r4", ts, true_value=2.0)),
        (0, 60, Prediction("c61", "clf", "1", ts, predicted_class="a", latency_ms=4.0,
                           features={"x": 9.0, "y": 40.0}, labels={"region": "eu"})),
        (1, 62, Label("c61", ts + 1, true_class="a")),  # rolling accuracy goes on
    ]  # fmt: skip


def apply_model(monitor: ModelMonitor, step: tuple[int, int, Any]) -> Any:
    topic, offset, event = step
    if topic == 0:
        return monitor.apply_prediction(offset, event)
    return monitor.apply_label(offset, event)


@pytest.mark.parametrize("variant", ["", "no_counters"])
def test_model_metrics_v1_restores_pending_entries_and_river_state(variant: str) -> None:
    """``no_counters``: the partition record before it held the cumulative counters
    (they start from zero then; the rest is the same)."""
    restored = make.model_agent().restore(0, read("model_metrics", 1, variant))
    fresh = make.model_state(make.model_agent().restore(0, {}))
    assert restored.pending == fresh.pending > 0
    assert restored.offsets == fresh.offsets
    assert apply_model(restored, make.model_inputs()[0]) is None  # applied before
    for step in model_steps():
        got, want = apply_model(restored, step), apply_model(fresh, step)
        if variant:  # counters published from zero: the rest as the original's
            got = [x for x in got or () if x.kind != "COUNTER"]
            want = [x for x in want or () if x.kind != "COUNTER"]
        assert got and got == want, step
    if not variant:
        assert restored.close() == fresh.close()


# -- alert evaluator ------------------------------------------------------------------
def test_alerting_v1_restores_firing_and_pending_alerts_from_chunks() -> None:
    joined = join(read("alerting", 1))
    assert not joined.broken and set(joined.table) == {STATE_KEY}
    agent = make.alerting_agent()
    agent._restore(joined.table[STATE_KEY])
    fresh = make.alerting_agent()
    make.alerting_run(fresh, make.ALERT_ENDS)
    assert agent.clock.last_evaluated_ms == make.ALERT_ENDS[-1]
    firing = sorted((a.labels["alertname"], a.starts_at_ms) for a in agent.engine.firing())
    assert firing == sorted((a.labels["alertname"], a.starts_at_ms) for a in fresh.engine.firing())
    assert [name for name, _ in firing] == ["Hot", "Quiet"]
    assert agent.engine.evaluate(make.ALERT_ENDS[2]) == []  # a replayed end changes nothing
    later = [make.ALERT_ENDS[-1] + 10_000 * k for k in range(1, 9)]
    sent = make.alerting_run(agent, later)
    assert sent == make.alerting_run(fresh, later)
    assert any(a.status == "firing" for a in sent)  # re-sends due from the restored sent_at


# -- notifier -------------------------------------------------------------------------
def test_notifier_v1_restores_groups_silences_deliveries_and_positions() -> None:
    joined = join(read("notifier", 1))
    assert not joined.broken
    agent = make.notifier_agent()
    agent._restore(joined.table)
    fresh = make.notifier_agent()
    inflight = make.notifier_run(fresh)
    assert agent.positions == {agent.alerts_topic: {0: 7, 1: 3}, agent.commands_topic: {0: 1}}
    assert all(k in agent.delivered for k in make.DELIVERED) and len(agent.delivered) == 3
    assert agent._resend == inflight != []
    now = make.BASE_MS + 40_000
    assert [a.to_api() for a in agent.manager.alerts(now)] == [
        a.to_api() for a in fresh.manager.alerts(now)
    ]
    assert any(a.state == "suppressed" for a in agent.manager.alerts(now))  # the silence
    assert agent.manager.groups() == fresh.manager.groups()
    for m in (agent.manager, fresh.manager):
        m.receive(make.notifier_alert("Down", "h4", now), now)
    later = make.BASE_MS + 30_000 + 2 * 60_000
    assert agent.manager.flush_due(later) == fresh.manager.flush_due(later) != []
