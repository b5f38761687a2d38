"""Silences: create/update, list, expire, matchers (regex, negative), expiry in time."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.commands import CommandError, CreateSilence, ExpireSilence, parse_command
from monitoring.alerts.model import Alert, rfc3339
from monitoring.alerts.silences import (
    MAX_COMMENT_LENGTH,
    MAX_CREATED_BY_LENGTH,
    MAX_ID_LENGTH,
    MAX_MATCHER_LENGTH,
    MAX_MATCHERS,
    SilenceLimitError,
    Silences,
    SilenceSpec,
)

S = 1000
M = 60 * S
H = 60 * M

CONFIG = """
route: {receiver: team, group_by: [alertname], group_wait: 30s, group_interval: 5m}
receivers: [{name: team}]
"""


def spec(matchers: list[dict[str, Any]], start: int, end: int, **kw: Any) -> dict[str, Any]:
    return {
        "matchers": matchers,
        "startsAt": rfc3339(start),
        "endsAt": rfc3339(end),
        "createdBy": kw.get("by", "ann"),
        "comment": kw.get("comment", "maintenance"),
    }


def create(sid: str, matchers: list[dict[str, Any]], start: int, end: int) -> CreateSilence:
    return CreateSilence(id=sid, silence=SilenceSpec.model_validate(spec(matchers, start, end)))


def m(name: str, value: str, regex: bool = False, equal: bool = True) -> dict[str, Any]:
    return {"name": name, "value": value, "isRegex": regex, "isEqual": equal}


def fire(host: str, t: int = 0, **labels: str) -> Alert:
    return Alert({"alertname": "HighCPU", "host": host, **labels}, {}, "firing", t)


@pytest.mark.parametrize(
    ("matchers", "labels", "silenced"),
    [
        ([m("host", "a")], {"host": "a"}, True),
        ([m("host", "a")], {"host": "b"}, False),
        ([m("host", "db-.*", regex=True)], {"host": "db-1"}, True),
        ([m("host", "db-.*", regex=True)], {"host": "web-db-1"}, False),  # anchored
        ([m("alertname", "HighCPU"), m("env", "prod", equal=False)], {"env": "dev"}, True),
        ([m("alertname", "HighCPU"), m("env", "prod", equal=False)], {"env": "prod"}, False),
        ([m("alertname", "HighCPU"), m("env", "prod", equal=False)], {}, True),
        ([m("alertname", "HighCPU"), m("env", "prod.*", True, False)], {"env": "prod-eu"}, False),
        ([m("alertname", "HighCPU"), m("env", "prod.*", True, False)], {"env": "dev"}, True),
    ],
)
def test_matchers_decide_what_is_silenced(
    matchers: list[dict[str, Any]], labels: dict[str, str], silenced: bool
) -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("s1", matchers, 0, H), 0)
    alert = Alert({"alertname": "HighCPU", **labels}, {}, "firing", 0)
    am.receive(alert, 0)
    out = am.flush_due(30 * S)
    assert (out == []) is silenced
    (status,) = am.alerts(30 * S)
    assert status.state == ("suppressed" if silenced else "active")
    assert status.silenced_by == (("s1",) if silenced else ())
    assert status.to_api()["status"]["silencedBy"] == (["s1"] if silenced else [])


def test_silence_mutes_only_matching_alerts_of_a_group() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("s1", [m("host", "a")], 0, H), 0)
    am.receive(fire("a"), 0)
    am.receive(fire("b"), 0)
    (n,) = am.flush_due(30 * S)
    assert [a.labels["host"] for a in n.alerts] == ["b"]


def test_silence_ends_in_time_and_the_alert_is_then_notified() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("s1", [m("host", "a")], 0, 10 * M), 0)
    am.receive(fire("a"), 0)
    assert am.flush_due(30 * S) == []  # t=30s: silenced
    assert am.flush_due(330 * S) == []  # t=5m30s: still silenced
    (n,) = am.flush_due(630 * S)  # t=10m30s: the silence ended at 10m
    assert [a.labels["host"] for a in n.alerts] == ["a"]
    assert am.alerts(630 * S)[0].state == "active"


def test_pending_silence_starts_later() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("s1", [m("host", "a")], 2 * M, H), 0)
    am.receive(fire("a"), 0)
    assert len(am.flush_due(30 * S)) == 1
    assert [s.state(30 * S) for s in am.silences.list(30 * S)] == ["pending"]
    assert [s.state(3 * M) for s in am.silences.list(3 * M)] == ["active"]


def test_silencing_a_notified_alert_sends_nothing_and_unsilencing_does_not_resend() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.receive(fire("a"), 0)
    assert len(am.flush_due(30 * S)) == 1
    am.apply(create("s1", [m("host", "a")], M, H), M)
    assert am.flush_due(330 * S) == []  # muted: no empty "resolved" message
    am.apply(ExpireSilence(id="s1"), 6 * M)
    assert am.flush_due(630 * S) == []  # the receiver already knows it fires


def test_expire_active_pending_expired_unknown() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("active", [m("host", "a")], 0, H), 0)
    am.apply(create("pending", [m("host", "b")], 2 * H, 3 * H), 0)
    done = am.apply(ExpireSilence(id="active"), 10 * M).silence
    assert done is not None and (done.starts_at_ms, done.ends_at_ms) == (0, 10 * M)
    done = am.apply(ExpireSilence(id="pending"), 10 * M).silence
    assert done is not None and (done.starts_at_ms, done.ends_at_ms) == (10 * M, 10 * M)
    assert [s.id for s in am.silences.list(10 * M, "expired")] == ["active", "pending"]
    with pytest.raises(CommandError, match="silence active has already expired"):
        am.apply(ExpireSilence(id="active"), 11 * M)
    with pytest.raises(CommandError, match="silence nope not found"):
        am.apply(ExpireSilence(id="nope"), 11 * M)


def test_list_filters_by_state_and_orders_by_start() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("b", [m("host", "b")], 2 * H, 3 * H), 0)
    am.apply(create("a", [m("host", "a")], 0, H), 0)
    assert [s.id for s in am.silences.list(0)] == ["a", "b"]
    assert [s.id for s in am.silences.list(0, "active")] == ["a"]
    assert [s.id for s in am.silences.list(0, "pending")] == ["b"]
    assert [s.id for s in am.silences.list(90 * M, "expired")] == ["a"]


def test_update_by_id_and_no_update_of_expired() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("s1", [m("host", "a")], 0, H), 0)
    am.apply(create("s1", [m("host", "b")], 0, 2 * H), M)
    (s,) = am.silences.list(M)
    assert s.matchers[0].value == "b" and s.ends_at_ms == 2 * H and s.updated_at_ms == M
    with pytest.raises(CommandError, match="has expired and cannot be updated"):
        am.apply(create("s1", [m("host", "c")], 0, 4 * H), 3 * H)


def test_start_in_the_past_becomes_now_and_end_in_the_past_is_refused() -> None:
    am = AlertManager.from_yaml(CONFIG)
    s = am.apply(create("s1", [m("host", "a")], 0, H), 10 * M).silence
    assert s is not None and s.starts_at_ms == 10 * M
    with pytest.raises(CommandError, match=r"endsAt .* is in the past"):
        am.apply(create("s2", [m("host", "a")], 0, H), 2 * H)


def test_api_shape() -> None:
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("s1", [m("host", "db.*", regex=True)], 0, H), 0)
    (s,) = am.silences.list(0)
    assert s.to_api(0) == {
        "id": "s1",
        "matchers": [{"name": "host", "value": "db.*", "isRegex": True, "isEqual": True}],
        "startsAt": "1970-01-01T00:00:00.000Z",
        "endsAt": "1970-01-01T01:00:00.000Z",
        "updatedAt": "1970-01-01T00:00:00.000Z",
        "createdBy": "ann",
        "comment": "maintenance",
        "status": {"state": "active"},
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (spec([], 0, H), "create_silence.silence.matchers: Tuple should have at least 1 item"),
        (spec([m("host", ".*", regex=True)], 0, H), "must not match the empty string"),
        (spec([m("host", "(", regex=True)], 0, H), "invalid regex"),
        (spec([m("host", "a")], H, 0), "endsAt must be after startsAt"),
        ({**spec([m("host", "a")], 0, H), "createdBy": ""}, "silence.createdBy"),
        ({**spec([m("host", "a")], 0, H), "extra": 1}, "silence.extra: Extra inputs"),
        ({**spec([m("host", "a")], 0, H), "id": "y"}, "silence.id 'y' differs from the command"),
    ],
)
def test_bad_silences_are_rejected_naming_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command({"kind": "create_silence", "id": "x", "silence": body})


def test_expired_silences_are_forgotten_after_retention() -> None:
    silences = Silences()
    spec_ = SilenceSpec.model_validate(spec([m("host", "a")], 0, H))
    silences.upsert(spec_.to_silence("s1", 0), 0)
    assert silences.gc(H + 5 * H - 1, retention_ms=5 * H) == 0
    assert silences.gc(H + 5 * H, retention_ms=5 * H) == 1
    assert silences.list(0) == []


@pytest.mark.timeout(60)  # Python's backtracking re takes ~2**100 steps per label here
@pytest.mark.parametrize(
    ("pattern", "silenced_host", "active_host"),
    [
        ("(a|a)*b", "a" * 99 + "b", "a" * 100),
        ("(a+)+$", "a" * 100, "a" * 99 + "!"),
        ("(x+x+)+y", "x" * 99 + "y", "x" * 100),
    ],
)
def test_a_pathological_regex_silence_does_not_stall_the_flush(
    pattern: str, silenced_host: str, active_host: str
) -> None:
    am = AlertManager.from_yaml(CONFIG)
    silence = am.apply(create("s1", [m("host", pattern, regex=True)], 0, H), 0).silence
    assert silence is not None
    (matcher,) = silence.matchers
    assert type(matcher.regex).__name__ == "LabelRegex"  # RE2, linear in the label's length
    am.receive(fire(silenced_host), 0)
    am.receive(fire(active_host), 0)
    (n,) = am.flush_due(30 * S)
    assert [a.labels["host"] for a in n.alerts] == [active_host]
    assert {s.alert.labels["host"]: s.silenced_by for s in am.alerts(30 * S)} == {
        silenced_host: ("s1",),
        active_host: (),
    }


@pytest.mark.parametrize("pattern", [r"(a)\1", r"db(?=-)", r"(?<!x)db", r"(?P<x>a)(?P=x)"])
def test_patterns_re2_refuses_are_refused_when_the_silence_is_created(pattern: str) -> None:
    body = spec([m("host", pattern, regex=True)], 0, H)
    with pytest.raises(
        CommandError, match=r"invalid regex in matcher host=~.*\(RE2: no lookaround"
    ):
        parse_command({"kind": "create_silence", "id": "x", "silence": body})


def _limit_cases() -> list[tuple[dict[str, Any], str]]:
    ok = spec([m("host", "a")], 0, H)
    many = [m(f"l{i}", "a") for i in range(MAX_MATCHERS + 1)]
    return [
        ({**ok, "matchers": many}, f"{MAX_MATCHERS + 1} matchers, at most {MAX_MATCHERS}"),
        (spec([m("host", "a" * 1025, regex=True)], 0, H), "matcher value has 1025 characters"),
        (spec([m("h" * 1025, "a")], 0, H), "matcher name has 1025 characters, at most 1024"),
        ({**ok, "comment": "c" * 4097}, "comment has 4097 characters, at most 4096 allowed"),
        ({**ok, "createdBy": "b" * 257}, "createdBy has 257 characters, at most 256 allowed"),
        ({**ok, "id": "i" * 257}, "silence.id: Value error, id has 257 characters"),
    ]


@pytest.mark.parametrize(("body", "message"), _limit_cases())
def test_silence_limits_are_refused_with_a_clear_message(
    body: dict[str, Any], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        parse_command({"kind": "create_silence", "id": body.get("id", "x"), "silence": body})
    with pytest.raises(ValidationError) as info:
        SilenceSpec.model_validate(body)
    assert isinstance(info.value.errors()[0]["ctx"]["error"], SilenceLimitError)


def test_silence_limits_are_inclusive() -> None:
    body = {
        **spec([m(f"l{i}", "a" * MAX_MATCHER_LENGTH) for i in range(MAX_MATCHERS)], 0, H),
        "comment": "c" * MAX_COMMENT_LENGTH,
        "createdBy": "b" * MAX_CREATED_BY_LENGTH,
    }
    sid = "i" * MAX_ID_LENGTH
    cmd = parse_command({"kind": "create_silence", "id": sid, "silence": {**body, "id": sid}})
    assert isinstance(cmd, CreateSilence) and len(cmd.silence.matchers) == MAX_MATCHERS
    with pytest.raises(CommandError, match=r"expire_silence\.id: Value error, id has 257"):
        parse_command({"kind": "expire_silence", "id": "i" * 257})


def test_a_snapshot_silence_re2_refuses_is_dropped_not_fatal() -> None:
    """A silence an older version (Python's re) accepted comes back from the snapshot."""
    am = AlertManager.from_yaml(CONFIG)
    am.apply(create("good", [m("host", "db.*", regex=True)], 0, H), 0)
    state = json.loads(am.to_bytes())
    bad = {**state["silences"][0], "id": "bad"}
    bad["matchers"] = [{"name": "host", "value": r"(a)\1", "isRegex": True, "isEqual": True}]
    state["silences"].append(bad)
    restored = AlertManager.from_bytes(am.config, json.dumps(state).encode())
    assert [s.id for s in restored.silences.list(0)] == ["good"]
    ((sid, why),) = restored.silences.dropped
    assert sid == "bad" and "invalid regex" in why and "RE2" in why
    restored.receive(fire("db1"), 0)
    assert restored.flush_due(30 * S) == []  # the good silence still mutes
