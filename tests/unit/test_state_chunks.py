"""Chunked state records: whatever the sizes and wherever a crash cuts the stream of
records, the compacted topic reads back as each key's last whole value (or the one
before it, for the key being written at the crash), never a mix and never over the
message limit."""

from __future__ import annotations

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.runtime.state_chunks import ChunkedRecords, is_chunk_key, join

MAX = 300

writes = st.lists(
    st.tuples(
        st.sampled_from([b"a", b"b", b"group:x"]),
        st.one_of(st.none(), st.binary(min_size=0, max_size=2_000)),
    ),
    min_size=1,
    max_size=12,
)


def compact(records: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes]:
    table: dict[bytes, bytes] = {}
    for k, v in records:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v
    return table


@settings(max_examples=examples(300), deadline=None)
@given(writes, st.data())
def test_crash_anywhere_reads_back_whole_values(
    ws: list[tuple[bytes, bytes | None]], data: st.DataObject
) -> None:
    w = ChunkedRecords(MAX, overhead=0)
    produced: list[tuple[bytes, bytes | None]] = []
    before: list[dict[bytes, bytes | None]] = []  # logical state before each write
    state: dict[bytes, bytes | None] = {}
    ends: list[int] = []
    for key, value in ws:
        before.append(dict(state))
        out = w.expand(key, value)
        assert all(len(k) + len(v or b"") <= MAX for k, v in out)
        produced += out
        ends.append(len(produced))
        state[key] = value
    cut = data.draw(st.integers(0, len(produced)))
    read = join(compact(produced[:cut]))
    assert read.broken == []
    assert not any(is_chunk_key(k) for k in read.table)
    # the write the crash interrupted (if any): its key may read old or new
    i = next((n for n, e in enumerate(ends) if e > cut), len(ws))
    done = before[i] if i < len(ws) else state
    for key in {k for k, _ in ws}:
        got = read.table.get(key)
        if i < len(ws) and key == ws[i][0]:
            assert got in (done.get(key), ws[i][1])
        else:
            assert got == done.get(key)


def test_a_writer_that_restarts_keeps_alternating_slots() -> None:
    w = ChunkedRecords(MAX, overhead=0)
    produced = w.expand(b"k", b"1" * 1000)
    restarted = ChunkedRecords(MAX, overhead=0)
    restarted.learn(compact(produced))
    produced += restarted.expand(b"k", b"2" * 1000)[:2]  # crash after two chunks
    assert join(compact(produced)).table == {b"k": b"1" * 1000}


def test_missing_chunks_are_reported_not_returned() -> None:
    produced = ChunkedRecords(MAX, overhead=0).expand(b"k", b"z" * 1000)
    table = compact(produced)
    del table[produced[0][0]]
    read = join(table)
    assert read.table == {} and read.broken == [b"k"]


def test_a_forged_manifest_is_not_trusted() -> None:
    """Garbage posing as a manifest of 2^32 chunks: reported broken, and the next write
    does not try to tombstone four billion keys."""
    from monitoring.runtime.state_chunks import _HEAD, MAGIC

    forged = {b"k": MAGIC + _HEAD.pack(0, 2**32 - 1, 10) + b"\x00" * 32, b"j": MAGIC + b"\x01"}
    assert sorted(join(forged).broken) == [b"j", b"k"]
    w = ChunkedRecords(MAX, overhead=0)
    w.learn(forged)
    assert w.in_force == {}
    assert len(w.expand(b"k", b"x" * 1000)) < 10
