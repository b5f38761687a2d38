"""The log agent's state stays bounded whatever the templates (hardening finding 6).

100,000 distinct templates through one service, in process (``make test``; the fast
lane runs 10,000, ten times the bound): templates bounded by
``max_templates`` (the newest kept), every state record well under the message limit,
a restore from the compacted table gives the same templates, counters and first-seen
times and continues exactly as the uninterrupted run; the per-template series stop
with their template (finding 13).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from monitoring.logs.analyzer import (
    CHECKPOINT_KEY,
    DEFAULT_CHUNK_BYTES,
    PartitionLogs,
    StateRecords,
    chunk_key,
)
from monitoring.logs.corpus import distinct_messages
from monitoring.logs.counts import TEMPLATE_EVENTS

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
BOUND = 1000
T0 = 1_700_000_000_000


def record(i: int, message: str, level: str = "info") -> dict[str, Any]:
    return {"timestamp_ms": T0 + i * 10, "service": "api", "level": level, "message": message}


def apply(table: dict[str, bytes], records: StateRecords, meta: bytes) -> None:
    for k, v in [*records, (CHECKPOINT_KEY, meta)]:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v


def restored(table: dict[str, bytes]) -> PartitionLogs:
    p = PartitionLogs(max_templates=BOUND)
    saved = dict(table)
    meta = saved.pop(CHECKPOINT_KEY, None)
    p.restore(meta, saved.items())
    assert p.restore_errors == []
    return p


@pytest.mark.parametrize("n", [10_000, pytest.param(100_000, marks=pytest.mark.slow)])
def test_100k_templates_keep_the_state_bounded(n: int) -> None:
    messages = distinct_messages(n, seed=7)
    p = PartitionLogs(max_templates=BOUND)
    table: dict[str, bytes] = {}
    largest = 0
    template_samples: dict[str, float] = {}
    for i, msg in enumerate(messages):
        r = p.process(i, record(i, msg), T0 + i * 10)
        assert r is not None and r.template_id == i + 1  # each line a new template
        for s in r.samples:
            if s.name == TEMPLATE_EVENTS:
                template_samples[s.labels["template_id"]] = s.value
        if (i + 1) % (n // 5) == 0:
            records, meta = p.checkpoint()
            largest = max(largest, *(len(k.encode()) + len(v or b"") for k, v in records))
            apply(table, records, meta)
            p.confirm()
    svc = p.services["api"]
    assert p.evictions == n - BOUND
    newest = list(range(n - BOUND + 1, n + 1))
    assert sorted(svc.templates.miner.drain.id_to_cluster) == newest
    assert sorted(svc.first_seen) == newest and svc.first_error == {}
    assert sorted(svc.counts.templates) == newest  # evicted templates' counters are gone
    # a template's series got samples only while it lived: at most one per window
    # (1,000 lines of 10 ms) for a template evicted 1,000 lines after it was created
    assert all(v == 1.0 for v in template_samples.values())
    assert largest <= DEFAULT_CHUNK_BYTES + 1024 < MAX_MESSAGE_BYTES
    assert p.has_changes  # the superseded generation's chunks, confirmed, may go
    apply(table, *p.checkpoint())
    assert sorted(k for k in table if k.startswith("\0s\0")) == [
        chunk_key("api", svc.gen, i) for i in range(svc.chunks)
    ]  # only the last generation's chunks are left
    assert sum(len(v) for v in table.values()) < 2 * DEFAULT_CHUNK_BYTES

    started = time.perf_counter()
    q = restored(table)
    restore_s = time.perf_counter() - started
    print(f"\nlargest state record {largest} bytes, state {len(table)} records "
          f"{sum(len(v) for v in table.values())} bytes, restore {restore_s:.3f} s")  # fmt: skip
    r_svc = q.services["api"]
    assert list(r_svc.templates.miner.drain.id_to_cluster) == list(
        svc.templates.miner.drain.id_to_cluster
    )  # same templates in the same LRU order
    assert {i: r_svc.templates.template(i) for i in newest} == {
        i: svc.templates.template(i) for i in newest
    }
    assert r_svc.counts.state() == svc.counts.state()
    assert r_svc.counts.levels == {"INFO": n}  # exact
    assert (r_svc.first_seen, r_svc.applied_offset) == (svc.first_seen, n - 1)

    # both continue alike: the oldest kept template (touched: it stays), the newest,
    # one evicted long ago and a new one (each a new template, evicting the oldest),
    # the second oldest kept (evicted by them), the oldest again
    more = [messages[n - BOUND], messages[n - 1], messages[0], "brand new words here",
            messages[n - BOUND + 1], messages[n - BOUND]]  # fmt: skip
    ids = []
    for j, msg in enumerate(more):
        i = n + j
        a = p.process(i, record(i, msg, "error"), T0 + i * 10)
        b = q.process(i, record(i, msg, "error"), T0 + i * 10)
        assert a == b and a is not None
        ids.append(a.template_id)
    assert ids == [n - BOUND + 1, n, n + 1, n + 2, n + 3, n - BOUND + 1]
    assert q.evictions == 3 and len(q.services["api"].templates) == BOUND


def test_evicted_templates_series_stop() -> None:
    """Counters of the live templates only: an evicted template's series gets no
    sample after its eviction, a template seen again is a new series."""
    p = PartitionLogs(window_ms=1_000, max_templates=2)
    msgs = ["alpha one", "beta two three", "gamma four five six"]
    series: list[set[str]] = []
    for i, m in enumerate([*msgs, msgs[0]]):
        r = p.process(i, record(i, m), T0)
        assert r is not None
        series.append({s.labels["template_id"] for s in r.samples if s.name == TEMPLATE_EVENTS})
    assert [r_id for r_id in p.services["api"].counts.templates] == [3, 4]
    # every emission so far holds at most max_templates template series
    assert all(len(s) <= 2 for s in series)
    closing = p.close_services(["api"])
    assert {s.labels.get("template_id") for s in closing} == {None, "3", "4"}


def test_a_manifest_without_its_chunks_is_an_error_not_a_crash() -> None:
    p = PartitionLogs(max_templates=BOUND, state_chunk_bytes=300)
    for i in range(20):
        p.process(i, record(i, f"m{i} " + "word " * (i % 5)), T0)
    records, meta = p.checkpoint()
    table: dict[str, bytes] = {}
    apply(table, records, meta)
    del table[chunk_key("api", 0, 1)]
    q = PartitionLogs(max_templates=BOUND)
    saved = dict(table)
    q.restore(saved.pop(CHECKPOINT_KEY), saved.items())
    assert q.restore_errors and q.restore_errors[0].startswith("api: ")
    assert q.services["api"].applied_offset == 19  # replayed messages are still skipped


def test_version_1_state_is_read_and_replaced() -> None:
    """A partition checkpointed by the previous version (the whole state of a service
    in one record under its name) restores, continues alike, and its next checkpoint
    overwrites that record with a manifest."""
    from monitoring.logs.corpus import generate

    lines = generate(300, seed=4)
    p = PartitionLogs(200)
    for i, ln in enumerate(lines[:200]):
        p.process(i, ln.record, ln.record["timestamp_ms"])
    table = {
        name: json.dumps({
            "v": 1, "applied_offset": svc.applied_offset, "counts": svc.counts.state(),
            "first_seen": {str(k): v for k, v in svc.first_seen.items()},
            "first_error": {str(k): v for k, v in svc.first_error.items()},
            "drain": svc.templates.snapshot().decode("ascii"),
        }).encode()
        for name, svc in p.services.items()
    }  # fmt: skip
    q = PartitionLogs(200)
    q.restore(json.dumps({"v": 1, "offset": 199}).encode(), table.items())
    assert q.restore_errors == [] and q.checkpoint_offset == 199
    for i, ln in enumerate(lines[200:], 200):
        assert p.process(i, ln.record, 0) == q.process(i, ln.record, 0)
    records, meta = q.checkpoint()
    apply(table, records, meta)
    assert all(json.loads(table[name])["v"] == 2 for name in q.services)
    r = PartitionLogs(200)
    saved = dict(table)
    r.restore(saved.pop(CHECKPOINT_KEY), saved.items())
    assert r.restore_errors == []
    assert {n: s.counts.state() for n, s in r.services.items()} == {
        n: s.counts.state() for n, s in p.services.items()
    }
