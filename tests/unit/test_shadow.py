"""Checkpoints count whole or not at all: any prefix of any checkpoint's records, on top
of what compaction kept, restores exactly the last committed state."""

from __future__ import annotations

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.runtime.shadow import COMMIT_KEY, MAGIC, MAX_SEQ, SLOT1, Shadow

KEYS = [b"a", b"b", b"p\x00id#1", b"\x00meta"]
changes = st.dictionaries(st.sampled_from(KEYS), st.none() | st.binary(max_size=3), max_size=4)


def compact(table: dict[bytes, bytes], records: list[tuple[bytes, bytes | None]]) -> None:
    for k, v in records:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v


@settings(max_examples=examples(300))
@given(
    legacy=st.dictionaries(st.sampled_from(KEYS), st.binary(min_size=1, max_size=3)),
    steps=st.lists(st.tuples(changes, st.integers(0, 12), st.booleans()), max_size=8),
)
def test_any_cut_restores_the_last_committed_state(
    legacy: dict[bytes, bytes], steps: list[tuple[dict[bytes, bytes | None], int, bool]]
) -> None:
    """``legacy``: a table from before the scheme. Each step checkpoints its changes; a
    cut step lands only its first ``cut`` records and the process restarts from what the
    topic holds (a fresh shadow from ``load``), its changes kept for the next attempt."""
    topic = dict(legacy)
    shadow, table = Shadow.load(topic)
    assert table == legacy
    committed = dict(legacy)
    pending: dict[bytes, bytes | None] = {}
    for change, cut, crash in steps:
        pending.update(change)
        records, attempt = shadow.records(pending)
        if crash and cut < len(records):
            compact(topic, records[:cut])
            shadow, table = Shadow.load(topic)  # a restart
        else:
            compact(topic, records)
            shadow.committed(attempt)
            for k, v in pending.items():
                if v is None:
                    committed.pop(k, None)
                else:
                    committed[k] = v
            pending = {}
            _, table = Shadow.load(topic)
        assert table == committed
    assert len(topic) <= 2 * len(KEYS) + 1  # two slots a key and the commit record


def test_deleted_keys_leave_the_topic_after_the_next_checkpoint() -> None:
    topic: dict[bytes, bytes] = {}
    shadow, _ = Shadow.load(topic)
    for change in ({b"a": b"1"}, {b"a": b"2"}, {b"a": None}, {}):
        records, attempt = shadow.records(change)
        compact(topic, records)
        shadow.committed(attempt)
    assert set(topic) == {COMMIT_KEY}


def test_records_it_did_not_write_are_refused() -> None:
    with pytest.raises(ValueError):
        Shadow.load({b"a" + SLOT1: b"no header"})
    with pytest.raises(ValueError):
        Shadow.load({COMMIT_KEY: b"garbage-garbage!"})
    for forged in (-1, MAX_SEQ, (1 << 63) - 1):  # the next checkpoint could not be numbered
        with pytest.raises(ValueError):
            Shadow.load({COMMIT_KEY: MAGIC + forged.to_bytes(8, "big", signed=True)})
