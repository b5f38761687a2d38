"""Model counters survive a crash: a worker that dies after publishing and replays from
its last checkpoint, taking the two topics in another interleaving, publishes nothing
that contradicts what the first run published, and the totals are exact.

The oracle is the produced events themselves. "Published" is every sample any run sent
(a crashed run's sends stay on the topic). The property a downstream window needs:
every (series, timestamp) carries one value whichever run wrote it, the values of a
series grow with the timestamp, and the last one is the exact total.
"""

from __future__ import annotations

import random
from collections import defaultdict

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.metrics.samples import Sample
from monitoring.mlops.counters import ModelCounters
from monitoring.mlops.events import Label, Prediction
from monitoring.mlops.monitor import ModelMonitor, MonitorConfig, apply_records

T0 = 1_700_000_000_000
W = 1_000  # counter window
Event = tuple[str, Prediction | Label]


def stream(rng: random.Random, n: int) -> tuple[list[Event], list[Event], dict[str, float]]:
    """Each topic's events in its own order (event time mostly rising, with jumps and
    disorder), and the totals they must add up to."""
    preds: list[Event] = []
    labels: list[Event] = []
    totals: dict[str, float] = defaultdict(float)
    ts = T0
    for i in range(n):
        ts += rng.choice([0, 50, 100, 300, 2_500]) if rng.random() > 0.02 else 20_000
        model = rng.choice(["a", "b"])
        cls = rng.choice("xy") if rng.random() < 0.8 else None
        value = rng.choice([0.5, 1.25, 3.0]) if cls is None or rng.random() < 0.3 else None
        jitter = rng.randint(-400, 0)
        preds.append(("p", Prediction(f"id{i}", model, "1", ts + jitter, cls, value, 5.0)))
        totals[f"model_predictions_total/{model}"] += 1
        if rng.random() < 0.85:
            true_cls = rng.choice("xy")
            true_value = rng.choice([0.5, 2.0])
            lab = Label(f"id{i}", ts + rng.randint(0, 3_000), true_cls, true_value)
            labels.append(("l", lab))
            if cls is not None:
                totals[f"model_correct_sum/{model}"] += cls == true_cls
                totals[f"model_correct_count/{model}"] += 1
            if value is not None:
                totals[f"model_abs_error_sum/{model}"] += abs(true_value - value)
                totals[f"model_abs_error_count/{model}"] += 1
    for topic in (preds, labels):  # local disorder within each topic
        for i in range(0, len(topic) - 4, 4):
            chunk = topic[i : i + 4]
            rng.shuffle(chunk)
            topic[i : i + 4] = chunk
    return preds, labels, dict(totals)


def interleave(
    rng: random.Random, preds: list[Event], labels: list[Event], start: tuple[int, int]
) -> list[tuple[str, int, Prediction | Label]]:
    """Both topics from ``start`` (next offsets), each in offset order, in a random
    interleaving (runs of either topic, as fetches deliver them)."""
    i, j = start
    out: list[tuple[str, int, Prediction | Label]] = []
    while i < len(preds) or j < len(labels):
        take_p = j >= len(labels) or (i < len(preds) and rng.random() < 0.5)
        for _ in range(rng.randint(1, 120)):
            if take_p and i < len(preds):
                out.append(("p", i, preds[i][1]))
                i += 1
            elif not take_p and j < len(labels):
                out.append(("l", j, labels[j][1]))
                j += 1
    return out


def apply(m: ModelMonitor, kind: str, offset: int, ev: Prediction | Label) -> list[Sample]:
    if kind == "p":
        assert isinstance(ev, Prediction)
        out = m.apply_prediction(offset, ev)
    else:
        assert isinstance(ev, Label)
        out = m.apply_label(offset, ev)
    assert out is not None
    return out


def counters(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.kind == "COUNTER"]


def check_published(published: list[Sample], totals: dict[str, float]) -> None:
    by_stamp: dict[tuple[str, int], set[float]] = defaultdict(set)
    for s in published:
        by_stamp[(s.series, s.timestamp_ms)].add(s.value)
    conflicts = {k: v for k, v in by_stamp.items() if len(v) > 1}
    assert not conflicts, f"a repeat with another value: {list(conflicts.items())[:3]}"
    series: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (name, ts), (value,) in by_stamp.items():
        series[name].append((ts, value))
    final: dict[str, float] = defaultdict(float)
    for name, points in series.items():
        values = [v for _, v in sorted(points)]
        assert values == sorted(values), f"{name} decreases: {values}"
        s = next(s for s in published if s.series == name)
        final[f"{s.name}/{s.labels['model']}"] += values[-1]  # sum over partitions
    assert set(final) == set(totals)
    for k, v in totals.items():
        assert abs(final[k] - v) < 1e-9 * max(1.0, v), (k, final[k], v)


def run_with_crashes(
    preds: list[Event],
    labels: list[Event],
    rng: random.Random,
    crashes: int,
    partition: int = 0,
    quiet: float = 0.0,
) -> list[Sample]:
    """Every sample published by a worker that checkpoints at random points and dies
    ``crashes`` times (losing what it applied since), replaying each time in another
    interleaving; finally the partition goes quiet and is closed. With ``quiet``, after
    that share of the messages one topic or both go quiet (as in a pause of the
    producers, then the agent closes them and checkpoints at once); not while a replay
    is behind what the crashed run had applied (a restored partition gets a whole idle
    timeout, and its replay keeps the topics busy)."""
    config = MonitorConfig(counter_window_ms=W, join_horizon_ms=3_600_000, partition=partition)
    table: dict[bytes, bytes] = {}
    published: list[Sample] = []
    applied = {"predictions": -1, "labels": -1}  # the most any run applied
    for life in range(crashes + 1):
        m = ModelMonitor(config)
        m.restore(table)
        start = (m.offsets["predictions"] + 1, m.offsets["labels"] + 1)
        events = interleave(rng, preds, labels, start)
        stop = rng.randint(0, len(events)) if life < crashes else len(events)
        for n, (kind, offset, ev) in enumerate(events[:stop]):
            published += counters(apply(m, kind, offset, ev))
            caught_up = all(m.offsets[t] >= o for t, o in applied.items())
            applied = {t: max(o, m.offsets[t]) for t, o in applied.items()}
            if caught_up and rng.random() < quiet:
                topics = rng.choice([(0,), (1,), (0, 1)])
                if m.waiting_for(topics):
                    published += counters(m.close(topics))
                    apply_records(table, m.checkpoint())
            if rng.random() < 0.05 or (life == crashes and n == len(events) - 1):
                apply_records(table, m.checkpoint())
    m = ModelMonitor(config)
    m.restore(table)
    assert not [e for e in interleave(rng, preds, labels, (0, 0)) if e[1] > m.offsets[
        "predictions" if e[0] == "p" else "labels"]]  # fmt: skip
    published += counters(m.close())
    assert not m.has_unpublished_counts
    return published


@settings(max_examples=examples(60), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), crashes=st.integers(0, 4))
def test_crashes_and_other_interleavings_publish_one_value_per_stamp(
    seed: int, n: int, crashes: int
) -> None:
    rng = random.Random(seed)
    preds, labels, totals = stream(rng, n)
    published = run_with_crashes(preds, labels, rng, crashes)
    check_published(published, totals)


@settings(max_examples=examples(60), deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300), crashes=st.integers(0, 3))
def test_quiet_topics_closed_mid_stream_keep_the_counts_exact(
    seed: int, n: int, crashes: int
) -> None:
    rng = random.Random(seed)
    preds, labels, totals = stream(rng, n)
    published = run_with_crashes(preds, labels, rng, crashes, quiet=0.02)
    check_published(published, totals)


def test_two_partitions_add_up() -> None:
    rng = random.Random(7)
    published: list[Sample] = []
    totals: dict[str, float] = defaultdict(float)
    for p in range(2):
        preds, labels, t = stream(rng, 400)
        published += run_with_crashes(preds, labels, rng, crashes=3, partition=p)
        for k, v in t.items():
            totals[k] += v
    assert {s.labels["partition"] for s in published} == {"0", "1"}
    check_published(published, dict(totals))


def test_two_interleavings_publish_the_same_stamps_and_values_between_closes() -> None:
    rng = random.Random(11)
    preds, labels, _ = stream(rng, 500)
    runs = []
    for _ in range(2):
        m = ModelMonitor(MonitorConfig(counter_window_ms=W))
        out: list[Sample] = []
        for kind, offset, ev in interleave(rng, preds, labels, (0, 0)):
            out += counters(apply(m, kind, offset, ev))
        runs.append({(s.series, s.timestamp_ms): s.value for s in out})
    common = runs[0].keys() & runs[1].keys()
    assert len(common) > 0.9 * max(len(runs[0]), len(runs[1]))
    assert {k: runs[0][k] for k in common} == {k: runs[1][k] for k in common}


def test_per_event_samples_are_not_idempotent_but_counters_are() -> None:
    """Why counters: a replayed per-event sample is a second record downstream (a
    window counts it again); a replayed counter repeats a value."""
    config = MonitorConfig(counter_window_ms=W)
    evs = [("p", i, Prediction(f"i{i}", "m", "1", T0 + i * 300, "x", None, 1.0)) for i in range(9)]
    first, table = ModelMonitor(config), {}
    apply_records(table, first.checkpoint())
    sent = [s for kind, o, ev in evs[:6] for s in apply(first, kind, o, ev)]  # then SIGKILL
    second = ModelMonitor(config)
    second.restore(table)
    sent += [s for kind, o, ev in evs for s in apply(second, kind, o, ev)]
    sent += second.close()
    latency = [s for s in sent if s.name == "model_latency_ms"]
    assert len(latency) == 15  # at least once: 6 of them twice
    total = [s for s in sent if s.name == "model_predictions_total"]
    assert len({(s.timestamp_ms, s.value) for s in total}) < len(total)  # repeats...
    assert max(s.value for s in total) == 9  # ...that change nothing


def test_counters_state_round_trip() -> None:
    c = ModelCounters(1_000, partition=3)
    c.prediction(0, 500, "k", {"model": "m"})
    c.label(0, 700)
    c.outcome(0, 0, "k", {"model": "m"}, True, 0.25)
    c.prediction(1, 1_500, "k", {"model": "m"})
    d = ModelCounters.from_state(c.state())
    assert d.state() == c.state()
    assert [(s.series, s.value) for s in d.close((2, 1))] == [
        (s.series, s.value) for s in c.close((2, 1))
    ]
