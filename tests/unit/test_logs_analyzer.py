"""The log agent's partition logic against an uninterrupted run, with crashes.

A simulated agent checkpoints at random points into a compacted table (latest value
per key), sometimes writes only part of a checkpoint, crashes, restores and replays
from the checkpoint offset, as the agent does with Kafka. Every output it ever
published must equal the uninterrupted run's: template id per record, counter value
per (series, timestamp), template events.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.logs.analyzer import CHECKPOINT_KEY, PartitionLogs
from monitoring.logs.corpus import generate
from monitoring.logs.records import FLAG_LEVEL

LINES = generate(400, seed=11, step_ms=7)
WINDOW_MS = 200


class Published:
    def __init__(self) -> None:
        self.template_of: dict[int, int] = {}
        self.samples: dict[tuple[str, int], float] = {}
        self.events: set[tuple[Any, ...]] = set()

    def add(self, offset: int, r: Any) -> None:
        assert self.template_of.setdefault(offset, r.template_id) == r.template_id
        for s in r.samples:
            assert self.samples.setdefault((s.series, s.timestamp_ms), s.value) == s.value
        self.events.update(tuple(e) for e in r.events)


def uninterrupted() -> Published:
    p, out = PartitionLogs(WINDOW_MS), Published()
    for i, line in enumerate(LINES):
        out.add(i, p.process(i, line.record, line.record["timestamp_ms"]))
    return out


EXPECTED = uninterrupted()


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_crashes_and_partial_checkpoints_change_no_output(data: st.DataObject) -> None:
    n = len(LINES)
    checkpoints = set(data.draw(st.lists(st.integers(1, n), max_size=12)))
    crashes = set(data.draw(st.lists(st.integers(1, n), max_size=4)))
    cut_short = set(data.draw(st.lists(st.sampled_from(sorted(checkpoints) or [0]), max_size=3)))
    table: dict[str, bytes] = {}
    out = Published()
    p = PartitionLogs(WINDOW_MS)
    pos = 0
    while pos < n:
        line = LINES[pos]
        r = p.process(pos, line.record, line.record["timestamp_ms"])
        if r is not None:
            out.add(pos, r)
        pos += 1
        crash = pos in crashes
        if pos in checkpoints:
            records, meta = p.checkpoint()
            if pos in cut_short:
                cut_short.discard(pos)
                keep = data.draw(st.integers(0, len(records)))
                table.update(records[:keep])  # no partition record: a crash mid-write
                crash = True
            else:
                table.update(records)
                table[CHECKPOINT_KEY] = meta
        if crash:
            crashes.discard(pos)
            p = PartitionLogs(WINDOW_MS)
            saved = dict(table)
            meta_raw = saved.pop(CHECKPOINT_KEY, None)
            p.restore(meta_raw, saved.items())
            pos = p.checkpoint_offset + 1
    assert out.template_of == EXPECTED.template_of
    assert out.samples == EXPECTED.samples
    assert out.events == EXPECTED.events


def test_counts_and_events_against_the_corpus_truth() -> None:
    p = PartitionLogs(WINDOW_MS)
    for i, line in enumerate(LINES):
        p.process(i, line.record, line.record["timestamp_ms"])
    samples = p.close_services(sorted(p.services))
    totals = {
        (s.labels["service"], s.labels.get("level")): s.value
        for s in samples
        if s.name == "log_events_total"
    }
    truth: dict[tuple[str, str], int] = {}
    for line in LINES:
        key = (line.record["service"], line.level)
        truth[key] = truth.get(key, 0) + 1
    # every (service, level) emitted at the last close has its exact cumulative total
    assert totals and all(truth[k] == v for k, v in totals.items())
    for svc, state in p.services.items():
        assert sum(state.counts.levels.values()) == sum(
            1 for x in LINES if x.record["service"] == svc
        )


def test_first_error_event_once_per_template() -> None:
    p = PartitionLogs()
    base: dict[str, Any] = {"timestamp_ms": 1_700_000_000_000, "service": "s"}
    now = base["timestamp_ms"]
    r1 = p.process(0, {**base, "level": "info", "message": "disk 1 full"}, now)
    r2 = p.process(1, {**base, "level": "error", "message": "disk 2 full"}, now)
    r3 = p.process(2, {**base, "level": "fatal", "message": "disk 3 full"}, now)
    assert r1 and r2 and r3
    assert [(e.change, e.first_error) for e in r1.events] == [("created", False)]
    assert [(e.change, e.first_error, e.first_error_ms) for e in r2.events] == [
        ("none", True, 1_700_000_000_000)
    ]
    assert r3.events == []


def test_unknown_level_counts_as_info_and_is_kept() -> None:
    p = PartitionLogs()
    r = p.process(
        0,
        {"timestamp_ms": 1_700_000_000_000, "service": "s", "level": "loud", "message": "m"},
        1_700_000_000_000,
    )
    assert r is not None and r.entry.level == "INFO"
    assert r.entry.attributes == {FLAG_LEVEL: "loud"}


def test_replayed_offsets_are_skipped() -> None:
    p = PartitionLogs()
    rec = {"timestamp_ms": 1_700_000_000_000, "service": "s", "message": "m"}
    assert p.process(5, rec, 0) is not None
    p.checkpoint()
    assert p.skip(5) and p.process(5, rec, 0) is None
