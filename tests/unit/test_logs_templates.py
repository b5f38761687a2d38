"""drain3 mining per service: exact cache, snapshot/restore keeps ids and templates."""

from __future__ import annotations

from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.logs.corpus import generate
from monitoring.logs.templates import ServiceTemplates, miner_config

WORDS = ["alpha", "beta", "gamma", "user", "login", "failed", "ok", "db", "17", "0x1f", "x9",
         "c9c1b6d13089", "a1b2", "fe80", "3.5e2", "deadbeef", "1.2.3a4"]  # fmt: skip
lines_st = st.lists(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
    min_size=1,
    max_size=80,
)


def mine_without_cache(lines: list[str]) -> list[tuple[int, str]]:
    """drain3's own TemplateMiner.add_log_message, no cache: the reference."""
    from drain3 import TemplateMiner

    m = TemplateMiner(None, miner_config())
    out = []
    for line in lines:
        r = m.add_log_message(line)
        out.append((r["cluster_id"], r["change_type"]))
    return out


_CHANGE = {"cluster_created": "created", "cluster_template_changed": "updated", "none": "none"}


@settings(max_examples=examples(60), deadline=None)
@given(lines_st)
def test_the_cache_changes_nothing(lines: list[str]) -> None:
    m = ServiceTemplates()
    got = [(r.template_id, r.change) for r in map(m.add, lines)]
    assert got == [(cid, _CHANGE[c]) for cid, c in mine_without_cache(lines)]


@settings(max_examples=examples(60), deadline=None)
@given(lines_st, st.data())
def test_restore_continues_exactly(lines: list[str], data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(lines)))
    whole = ServiceTemplates()
    expected = [tuple(whole.add(x)) for x in lines]
    first = ServiceTemplates()
    got = [tuple(first.add(x)) for x in lines[:cut]]
    second = ServiceTemplates.restore(first.snapshot())
    got += [tuple(second.add(x)) for x in lines[cut:]]
    assert got == expected
    assert {i: second.template(i) for i in range(1, len(second) + 1)} == {
        i: whole.template(i) for i in range(1, len(whole) + 1)
    }


def test_multi_line_messages_are_named_by_their_first_line() -> None:
    m = ServiceTemplates()
    a = m.add("job 1 failed\nTraceback (most recent call last):\n  File x")
    b = m.add("job 2 failed\nsomething else entirely on many words here")
    assert a.template_id == b.template_id == 1
    assert m.template(1) == "job <:N:> failed"


def test_variable_parts_are_masked() -> None:
    m = ServiceTemplates()
    m.add("connect to 10.0.0.1 took 33.5 ms")
    r = m.add("connect to 192.168.1.20 took 7 ms")
    assert (r.template_id, r.change) == (1, "none")
    assert m.template(1) == "connect to <:N:> took <:N:> ms"


def test_hex_ids_are_masked_and_lines_holding_them_hit_the_cache() -> None:
    m = ServiceTemplates()
    m.add("config reloaded checksum 5a7e0c9d1b2f")
    r = m.add("config reloaded checksum c9c1b6d13089")
    assert (r.template_id, r.change) == (1, "none")
    assert m.template(1) == "config reloaded checksum <:ID:>"
    assert m._cache == {"config reloaded checksum <:ID:>": m.miner.drain.id_to_cluster[1]}
    # one digit run among hex letters is a word with a number, not an id
    assert m.add("link fe80 down").template_id == 2
    assert m.template(2) == "link fe<:N:> down"


def test_corpus_templates_are_found_one_to_one() -> None:
    miners: dict[str, ServiceTemplates] = {}
    seen: dict[tuple[str, int], set[int]] = {}
    for line in generate(6_000, seed=3):
        svc = line.record["service"]
        r = miners.setdefault(svc, ServiceTemplates()).add(line.record["message"])
        seen.setdefault((svc, line.template), set()).add(r.template_id)
    assert len(seen) == 60
    assert all(len(ids) == 1 for ids in seen.values())
    per_service: dict[str, set[int]] = {}
    for (svc, _), ids in seen.items():
        per_service.setdefault(svc, set()).update(ids)
    assert all(len(ids) == 12 for ids in per_service.values())


def mine_bounded_without_cache(lines: list[str], max_clusters: int) -> list[tuple[int, str]]:
    """drain3 with its own ``max_clusters`` LRU (``LogClusterCache``), no cache."""
    from drain3 import TemplateMiner

    m = TemplateMiner(None, miner_config(max_clusters=max_clusters))
    return [(r["cluster_id"], r["change_type"]) for r in map(m.add_log_message, lines)]


@settings(max_examples=examples(80), deadline=None)
@given(lines_st, st.integers(1, 5))
def test_bounded_templates_are_drain3s_max_clusters(lines: list[str], bound: int) -> None:
    m = ServiceTemplates(max_templates=bound)
    got = [(r.template_id, r.change) for r in map(m.add, lines)]
    assert got == [(cid, _CHANGE[c]) for cid, c in mine_bounded_without_cache(lines, bound)]
    assert len(m) <= bound
    evicted = m.take_evicted()
    assert len(evicted) == len({cid for cid, _ in got}) - len(m)
    assert not set(evicted) & set(m.miner.drain.id_to_cluster)


@settings(max_examples=examples(80), deadline=None)
@given(lines_st, st.integers(1, 5), st.data())
def test_bounded_restore_continues_exactly(
    lines: list[str], bound: int, data: st.DataObject
) -> None:
    """Same ids and the same evictions after a restore: the LRU order is kept."""
    cut = data.draw(st.integers(0, len(lines)))
    whole = ServiceTemplates(max_templates=bound)
    expected = [tuple(whole.add(x)) for x in lines]
    first = ServiceTemplates(max_templates=bound)
    got = [tuple(first.add(x)) for x in lines[:cut]]
    second = ServiceTemplates.restore(first.snapshot(), max_templates=bound)
    got += [tuple(second.add(x)) for x in lines[cut:]]
    assert got == expected
    assert list(second.miner.drain.id_to_cluster) == list(whole.miner.drain.id_to_cluster)


def test_restore_with_a_lower_bound_evicts_the_least_recently_used() -> None:
    m = ServiceTemplates(max_templates=10)
    for line in ["alpha one", "beta two three", "gamma", "alpha one", "delta x y z"]:
        m.add(line)
    r = ServiceTemplates.restore(m.snapshot(), max_templates=2)
    assert r.take_evicted() == [2, 3]
    assert sorted(r.miner.drain.id_to_cluster) == [1, 4]
    assert r.add("epsilon").template_id == 5 and r.take_evicted() == [1]


def test_a_cache_hit_counts_as_a_use_for_eviction() -> None:
    lines = ["alpha one", "beta two three", "alpha one", "beta two three", "alpha one",
             "gamma", "beta two three", "alpha one"]  # fmt: skip
    m = ServiceTemplates(max_templates=2)
    got = [(r.template_id, r.change) for r in map(m.add, lines)]
    assert got == [(cid, _CHANGE[c]) for cid, c in mine_bounded_without_cache(lines, 2)]
    assert got[5:] == [(3, "created"), (4, "created"), (5, "created")]
