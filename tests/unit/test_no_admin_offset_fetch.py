"""No module reads committed offsets through ``AdminClient.list_consumer_group_offsets``:
librdkafka 2.16 dereferences the admin client's missing consumer group when the broker
answers it with NOT_COORDINATOR (a fresh broker loading ``__consumer_offsets``), and the
process dies of SIGSEGV (librdkafka #5040). ``ops.lag.CommittedOffsets`` reads them
through a consumer of the group instead."""

from __future__ import annotations

from pathlib import Path

import monitoring

ROOT = Path(monitoring.__file__).resolve().parent


def test_no_module_calls_the_admin_clients_offset_fetch() -> None:
    offenders = [
        str(p.relative_to(ROOT.parent))
        for p in sorted(ROOT.rglob("*.py"))
        if "list_consumer_group_offsets(" in p.read_text(encoding="utf-8")
    ]
    assert offenders == []


def test_the_offset_readers_consumers_are_bounded() -> None:
    """One consumer per group, at most ``MAX_GROUPS``: a broker listing many groups (or
    an attacker creating them) cannot make the status command hold a thread per group."""
    from monitoring.ops.lag import MAX_GROUPS, CommittedOffsets

    reader = CommittedOffsets("127.0.0.1:1")
    try:
        for i in range(MAX_GROUPS + 5):
            reader._consumer(f"g{i}")
        assert len(reader._consumers) == MAX_GROUPS
        assert "g0" not in reader._consumers and f"g{MAX_GROUPS + 4}" in reader._consumers
    finally:
        reader.close()
    assert reader._consumers == {}
