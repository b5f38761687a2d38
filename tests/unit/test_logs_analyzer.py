"""The log agent's partition logic against an uninterrupted run, with crashes.

A simulated agent checkpoints at random points into a compacted table (latest value
per key), sometimes writes only part of a checkpoint, crashes, restores and replays
from the checkpoint offset, as the agent does with Kafka. Every output it ever
published must equal the uninterrupted run's: template id per record, counter value
per (series, timestamp), template events. A checkpoint the broker did not acknowledge
is merged into the next one as ``partition_state.PartitionStates`` does (a key
written again moves to the end) and written again, maybe only in part.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fixtures.hypothesis_profiles import examples
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


# (max_templates, state_chunk_bytes): the defaults, and a bound the corpus exceeds
# with small chunks (evictions, and services of many chunks)
CONFIGS = [(1000, 512 * 1024), (6, 700)]


def partition(config: tuple[int, int]) -> PartitionLogs:
    return PartitionLogs(WINDOW_MS, max_templates=config[0], state_chunk_bytes=config[1])


def uninterrupted(config: tuple[int, int]) -> Published:
    p, out = partition(config), Published()
    for i, line in enumerate(LINES):
        out.add(i, p.process(i, line.record, line.record["timestamp_ms"]))
    return out


EXPECTED = {c: uninterrupted(c) for c in CONFIGS}


class Changelog:
    """A compacted state topic partition and the agent's unwritten checkpoint records."""

    def __init__(self) -> None:
        self.table: dict[str, bytes] = {}
        self.unwritten: dict[str, bytes | None] = {}

    def checkpoint(self, p: PartitionLogs, written: int | None) -> None:
        """Take a checkpoint; write all (``written`` None: acknowledged) or only the
        first ``written`` records (not acknowledged: kept for the next one)."""
        records, meta = p.checkpoint()
        for k, v in [*records, (CHECKPOINT_KEY, meta)]:
            self.unwritten.pop(k, None)
            self.unwritten[k] = v
        items = list(self.unwritten.items())
        for k, v in items if written is None else items[:written]:
            if v is None:
                self.table.pop(k, None)
            else:
                self.table[k] = v
        if written is None:
            self.unwritten.clear()
            p.confirm()

    def restart(self, config: tuple[int, int]) -> PartitionLogs:
        self.unwritten.clear()
        p = partition(config)
        saved = dict(self.table)
        meta_raw = saved.pop(CHECKPOINT_KEY, None)
        p.restore(meta_raw, saved.items())
        assert p.restore_errors == []
        return p


@pytest.mark.parametrize("config", CONFIGS)
@settings(max_examples=examples(40), deadline=None)
@given(st.data())
def test_crashes_and_partial_checkpoints_change_no_output(
    config: tuple[int, int], data: st.DataObject
) -> None:
    n = len(LINES)
    checkpoints = set(data.draw(st.lists(st.integers(1, n), max_size=12)))
    crashes = set(data.draw(st.lists(st.integers(1, n), max_size=4)))
    cut_short = set(data.draw(st.lists(st.sampled_from(sorted(checkpoints) or [0]), max_size=4)))
    log = Changelog()
    out = Published()
    p = partition(config)
    pos = 0
    while pos < n:
        line = LINES[pos]
        r = p.process(pos, line.record, line.record["timestamp_ms"])
        if r is not None:
            out.add(pos, r)
        pos += 1
        crash = pos in crashes
        if pos in checkpoints:
            if pos in cut_short:  # the broker got a prefix; maybe a crash now
                cut_short.discard(pos)
                log.checkpoint(p, data.draw(st.integers(0, 40)))
                crash = crash or data.draw(st.booleans())
            else:
                log.checkpoint(p, None)
        if crash:
            crashes.discard(pos)
            p = log.restart(config)
            pos = p.checkpoint_offset + 1
    expected = EXPECTED[config]
    assert out.template_of == expected.template_of
    assert out.samples == expected.samples
    assert out.events == expected.events


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


def test_a_checkpoint_during_replay_claims_only_what_was_replayed() -> None:
    """A checkpoint cut short left service b's record (applied offset 2) but not a's
    nor the partition record; a checkpoint taken after replaying offset 0 must cover
    offset 0 only, not b's 2: a's message at 1 is still to be replayed."""
    base = {"timestamp_ms": 1_700_000_000_000, "level": "info"}
    recs = [{**base, "service": s, "message": m}
            for s, m in [("a", "alpha one"), ("a", "beta two three"), ("b", "gamma")]]  # fmt: skip
    p = PartitionLogs()
    for i, r in enumerate(recs):
        p.process(i, r, 0)
    records, _ = p.checkpoint()
    table = {k: v for k, v in records if k == "b" or k.startswith("\0s\0b\0")}
    q = PartitionLogs()
    q.restore(None, table.items())
    assert q.process(0, recs[0], 0) is not None
    records, meta = q.checkpoint()
    assert json.loads(meta)["offset"] == 0
    r1 = q.process(1, recs[1], 0)
    assert r1 is not None and r1.template_id == 2
    assert q.process(2, recs[2], 0) is None  # b's own: in its restored state
