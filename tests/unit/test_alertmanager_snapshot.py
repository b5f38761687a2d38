"""Snapshot and restore: restoring at any point gives the same notifications."""

from __future__ import annotations

import random
from typing import Any

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.alerts.alert_manager import AlertManager, SnapshotError
from monitoring.alerts.commands import (
    Acknowledge,
    CommandError,
    CreateSilence,
    ExpireSilence,
    command_to_bytes,
    parse_command,
)
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import Alert, rfc3339
from monitoring.alerts.silences import SilenceSpec

S = 1000
M = 60 * S

CONFIG = ManagerConfig.from_yaml("""
route:
  receiver: default
  group_by: [alertname]
  group_wait: 30s
  group_interval: 2m
  repeat_interval: 10m
  routes:
    - matchers: ['team="db"']
      receiver: db
      escalation: oncall
      continue: true
    - matchers: ['severity="critical"']
      receiver: pager
      group_by: [alertname, host]
      group_wait: 0s
receivers: [{name: default}, {name: db}, {name: pager}, {name: lead}, {name: boss}]
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [host]
escalation_policies:
  - name: oncall
    tiers:
      - {receivers: [db], delay: 3m}
      - {receivers: [lead], delay: 4m}
      - {receivers: [boss]}
""")

HOSTS = ["a", "b", "c"]
NAMES = ["Down", "Slow"]


# team and severity follow the host, so that the same alert fires and resolves often
HOST_LABELS = {"a": ("db", "warning"), "b": ("db", "critical"), "c": ("web", "warning")}


def alert_of(name: str, host: str, firing: bool, t: int) -> Alert:
    team, severity = HOST_LABELS[host]
    labels = {"alertname": name, "host": host, "team": team, "severity": severity}
    if firing:
        return Alert(labels, {"summary": f"{name} on {host}"}, "firing", t, value=1.5)
    return Alert(labels, {"summary": f"{name} on {host}"}, "resolved", 0, ends_at_ms=t)


alert_op = st.tuples(
    st.just("alert"),
    st.sampled_from(NAMES),
    st.sampled_from(HOSTS),
    st.booleans(),
)
silence_op = st.tuples(
    st.just("silence"), st.sampled_from(HOSTS), st.booleans(), st.integers(1, 20)
)
expire_op = st.tuples(st.just("expire"), st.integers(0, 5))
ack_op = st.tuples(st.just("ack"), st.sampled_from(NAMES), st.sampled_from(HOSTS), st.booleans())
# clock steps around the configured timers, and arbitrary ones
steps = st.one_of(st.sampled_from([1, 10 * S, 30 * S, M, 2 * M, 3 * M, 5 * M]),
                  st.integers(1, 8 * M))  # fmt: skip
tick_op = st.tuples(st.just("tick"), steps)
ops = st.lists(st.one_of(alert_op, alert_op, silence_op, expire_op, ack_op, tick_op, tick_op),
               min_size=5, max_size=40)  # fmt: skip


def command_for(op: tuple[Any, ...], now: int, step: int) -> Any:
    kind = op[0]
    if kind == "silence":
        _, host, regex, minutes = op
        matcher = {"name": "host", "value": f"{host}|zz" if regex else host, "isRegex": regex}
        spec = SilenceSpec.model_validate({
            "matchers": [matcher], "startsAt": rfc3339(now),
            "endsAt": rfc3339(now + minutes * M), "createdBy": "t", "comment": "c"})  # fmt: skip
        return CreateSilence(id=f"s{step % 6}", silence=spec)
    if kind == "expire":
        return ExpireSilence(id=f"s{op[1]}")
    _, name, host, by_group = op
    if by_group:
        return Acknowledge(group_key=f'{{}}/{{team="db"}}:{{alertname="{name}"}}', by="t")
    return Acknowledge(fingerprint=alert_of(name, host, True, 0).fingerprint, by="t")


def play(
    ops_: list[tuple[Any, ...]], restore_at: int | None, via: str = "bytes"
) -> tuple[list[Any], bytes]:
    """Run the operations; restore at ``restore_at`` from ``to_bytes`` or from a
    compacted topic fed by ``checkpoint()`` after every operation."""
    am = AlertManager(CONFIG)
    topic: dict[str, bytes] = {}  # a compacted topic: the latest value per key

    def checkpoint() -> None:
        for key, value in am.checkpoint().items():
            if value is None:
                topic.pop(key, None)
            else:
                topic[key] = value

    checkpoint()  # at start-up
    now = 0
    log: list[Any] = []
    for step, op in enumerate(ops_):
        if step == restore_at:
            data = am.to_bytes()
            if via == "bytes":
                am = AlertManager.from_bytes(CONFIG, data)
            else:
                assert topic == am.records()  # the checkpoints missed no change
                am = AlertManager.from_records(CONFIG, topic)
            assert am.to_bytes() == data
        kind = op[0]
        if kind == "alert":
            am.receive(alert_of(op[1], op[2], op[3], now), now)
        elif kind == "tick":
            end = now + op[1]
            while (t := am.next_deadline()) is not None and t <= end:
                now = t
                log += [(now, n) for n in am.flush_due(now)]
            now = end
            log += [(now, n) for n in am.flush_due(now)]
        else:
            # commands travel as bytes on a control topic
            wire = command_to_bytes(command_for(op, now, step))
            try:
                log.append(("applied", am.apply(parse_command(wire), now)))
            except CommandError as e:
                log.append(("error", str(e)))
        checkpoint()
    log += [("status", s) for s in am.alerts(now)]
    assert topic == am.records()
    return log, am.to_bytes()


@settings(max_examples=examples(120), deadline=None)
@given(ops_=ops, data=st.data())
def test_restore_anywhere_equals_no_restore(ops_: list[tuple[Any, ...]], data: Any) -> None:
    restore_at = data.draw(st.integers(0, len(ops_)))
    via = data.draw(st.sampled_from(["bytes", "records"]))
    assert play(ops_, restore_at, via) == play(ops_, None)


def random_ops(seed: int, n: int = 60) -> list[tuple[Any, ...]]:
    """Long uniform sequences: they reach resolutions and high tiers more often."""
    rng = random.Random(seed)
    out: list[tuple[Any, ...]] = []
    for _ in range(n):
        kind = rng.choice(["alert", "alert", "silence", "expire", "ack", "tick", "tick"])
        if kind == "alert":
            out.append((kind, rng.choice(NAMES), rng.choice(HOSTS), rng.random() < 0.5))
        elif kind == "silence":
            out.append((kind, rng.choice(HOSTS), rng.random() < 0.5, rng.randint(1, 20)))
        elif kind == "expire":
            out.append((kind, rng.randint(0, 5)))
        elif kind == "ack":
            out.append((kind, rng.choice(NAMES), rng.choice(HOSTS), rng.random() < 0.5))
        else:
            out.append((kind, rng.randint(1, 8 * M)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_restore_anywhere_equals_no_restore_long_runs(seed: int) -> None:
    ops_ = random_ops(seed)
    expected = play(ops_, None)
    for restore_at in (seed % 7, len(ops_) // 2 + seed % 11, len(ops_) - 1):
        assert play(ops_, restore_at, "bytes") == expected
        assert play(ops_, restore_at, "records") == expected


def test_long_runs_reach_every_feature() -> None:
    """Guard for the test above: its sequences do exercise what restore must keep."""
    kinds: set[str] = set()
    for seed in range(40):
        for item in play(random_ops(seed), None)[0]:
            if item[0] in ("applied", "error", "status"):
                kinds.add(item[0] + (":" + item[1].kind if item[0] == "applied" else ""))
                if item[0] == "status":
                    kinds.add(item[1].state)
            else:
                kinds.add(f"tier{item[1].tier}:{item[1].status}")
    assert kinds >= {"tier0:firing", "tier0:resolved", "tier1:firing", "tier2:firing",
                     "tier1:resolved", "applied:create_silence", "applied:expire_silence",
                     "applied:acknowledge", "error", "suppressed", "active"}  # fmt: skip


def test_restore_keeps_dedup_silences_acks_and_escalation() -> None:
    am = AlertManager(CONFIG)
    am.receive(alert_of("Down", "a", True, 0), 0)
    first = am.flush_due(30 * S)
    assert [n.receiver for n in first] == ["db"]  # route receiver and tier 0: once
    am.apply(command_for(("silence", "b", False, 30), 40 * S, 0), 40 * S)
    restored = AlertManager.from_bytes(CONFIG, am.to_bytes())
    assert restored.flush_due(2 * M + 30 * S) == []  # nothing re-sent
    assert [s.id for s in restored.silences.list(M)] == ["s0"]
    (n,) = restored.flush_due(3 * M + 30 * S)  # escalation continues where it was
    assert (n.receiver, n.tier) == ("lead", 1)


def test_restore_with_a_removed_route_routes_its_alerts_again() -> None:
    am = AlertManager(CONFIG)
    am.receive(alert_of("Down", "a", True, 0), 0)
    am.flush_due(30 * S)
    smaller = ManagerConfig.from_yaml("""
route: {receiver: default, group_by: [alertname], group_wait: 30s, group_interval: 2m}
receivers: [{name: default}, {name: ops}]
""")
    restored = AlertManager.from_bytes(smaller, am.to_bytes())
    # the db route is gone: its alert now belongs to the root route, whose receiver hears
    # of it when the old group would have flushed next
    assert [g["groupKey"] for g in restored.groups()] == ['{}:{alertname="Down"}']
    assert restored.next_deadline() == 2 * M + 30 * S
    (n,) = restored.flush_due(2 * M + 30 * S)
    assert (n.receiver, [a.labels["host"] for a in n.alerts]) == ("default", ["a"])


def test_checkpoint_writes_only_what_changed() -> None:
    am = AlertManager(CONFIG)
    assert set(am.checkpoint()) == {"meta"}
    am.receive(alert_of("Down", "c", True, 0), 0)  # team web, warning: the root route
    assert list(am.checkpoint()) == ['group:[[],"{}:{alertname=\\"Down\\"}"]']
    assert am.checkpoint() == {}
    am.flush_due(10 * S)  # nothing due
    assert am.checkpoint() == {}
    am.flush_due(30 * S)
    assert len(am.checkpoint()) == 1
    am.receive(alert_of("Down", "c", False, 40 * S), 40 * S)
    am.checkpoint()
    am.flush_due(2 * M + 30 * S)  # resolution sent, the group goes: a tombstone
    assert am.checkpoint() == {'group:[[],"{}:{alertname=\\"Down\\"}"]': None}


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"not json", "not an alert manager snapshot"), (b"{}", "not an alert manager snapshot"),
     (b'{"version": 99}', "snapshot version 99 is not 1")],
)  # fmt: skip
def test_bad_snapshot_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(SnapshotError, match=message):
        AlertManager.from_bytes(CONFIG, data)
