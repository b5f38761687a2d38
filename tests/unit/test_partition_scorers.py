"""PartitionScorers: the anomaly agent's per-partition state, without Kafka."""

from __future__ import annotations

import random

from monitoring.anomaly import DEFAULT_DETECTOR
from monitoring.anomaly.partition import PartitionScorers
from monitoring.anomaly.scorer import SeriesScorer


def make(_: str) -> SeriesScorer:
    return SeriesScorer(DEFAULT_DETECTOR)


def stream(n: int = 400) -> list[tuple[int, str, int, float]]:
    rng = random.Random(3)
    out = []
    for i in range(n):
        key = f"s{i % 3}"
        v = 10 + rng.gauss(0, 1) + (50 if i == 300 else 0)
        out.append((i, key, 1_000 * (i // 3), v))
    return out


def test_restore_at_any_checkpoint_gives_the_uninterrupted_scores() -> None:
    events = stream()
    ref = PartitionScorers(make, idle_ms=10**9)
    expected = [ref.process(o, k, "m", t, v) for o, k, t, v in events]
    for cut in (1, 57, 200, 399):
        part = PartitionScorers(make, idle_ms=10**9)
        for o, k, t, v in events[:cut]:
            part.process(o, k, "m", t, v)
        table = dict(part.checkpoint())
        restored = PartitionScorers(make, idle_ms=10**9)
        restored.restore({k: v for k, v in table.items() if v is not None})
        # the source replays from an earlier offset: applied messages are skipped
        got = [restored.process(o, k, "m", t, v) for o, k, t, v in events[max(0, cut - 20) :]]
        assert got[: min(20, cut)] == [None] * min(20, cut)
        assert got[min(20, cut) :] == expected[cut:]


def test_idle_series_are_evicted_with_a_tombstone() -> None:
    part = PartitionScorers(make, idle_ms=60_000)
    part.process(0, "old", "m", 0, 1.0)
    part.process(1, "new", "m", 30_000, 1.0)
    assert [k for k, v in part.checkpoint() if v is None] == []
    part.process(2, "new", "m", 61_000, 1.0)
    records = part.checkpoint()
    assert ("old", None) in records and len(part) == 1
    assert not part.has_changes


def test_memory_is_estimated_from_a_sample_of_the_series() -> None:
    part = PartitionScorers(make, idle_ms=10**9)
    for o, k, t, v in [(i, f"s{i % 40}", 1_000 * (i // 40), float(i % 7)) for i in range(400)]:
        part.process(o, k, "m", t, v)
    exact = part.nbytes(sample=40)  # every series measured
    assert exact == sum(part._series[f"s{i}"].scorer.nbytes() for i in range(40))
    estimate = part.nbytes(sample=8)
    assert abs(estimate - exact) <= 0.05 * exact  # series of one detector differ little


def test_series_beyond_max_series_are_refused_and_idle_ones_make_room() -> None:
    """A label per request id: 100,000 distinct series, at most ``max_series`` detectors."""
    part = PartitionScorers(make, idle_ms=60_000, max_series=50)
    admitted = 0
    for i in range(100_000):
        key = f'req{{id="{i}"}}'
        if part.admits(key):
            admitted += 1
            assert part.process(i, key, "req", 1_000, 1.0) is not None
    assert admitted == 50 and len(part) == 50
    assert part.admits('req{id="7"}') and not part.admits('req{id="99999"}')
    part.process(100_000, "later", "m", 120_000, 1.0)  # the first 50 are idle now
    assert sum(v is None for _, v in part.checkpoint()) == 50
    assert part.admits('req{id="99999"}')


def test_restore_drops_undecodable_records_and_keeps_the_rest() -> None:
    part = PartitionScorers(make, idle_ms=10**9)
    for o, k, t, v in stream(30):
        part.process(o, k, "m", t, v)
    table = {k: v for k, v in part.checkpoint() if v is not None}
    table["garbage"] = b"\x00\x01not a detector"
    table["short"] = b"\x01"
    restored = PartitionScorers(make, idle_ms=10**9)
    restored.restore(table)
    assert len(restored) == 3 and restored.undecodable == 2
