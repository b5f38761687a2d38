"""Silences are bounded in number (issue 13, finding 13), as Alertmanager's
``--silences.max-silences``: a new silence beyond ``notifier.max_silences`` active or
pending ones is refused (400 from the API, skipped and counted from the commands
topic); updates pass; expired ones are kept up to as many, the earliest ended first."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from monitoring.agents.notifier import NotifierAgent
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import rfc3339
from monitoring.alerts.silences import SilenceLimitError, Silences, SilenceSpec
from monitoring.config import Settings

H = 3_600_000
CONFIG = "route: {receiver: team, group_by: [alertname]}\nreceivers: [{name: team}]\n"


def spec(value: str = "db", starts: int = 0) -> dict[str, Any]:
    return {
        "matchers": [{"name": "host", "value": value}], "startsAt": rfc3339(starts),
        "endsAt": rfc3339(starts + H), "createdBy": "ann", "comment": "maintenance",
    }  # fmt: skip


def make(sid: str, now: int, starts: int = 0) -> Any:
    return SilenceSpec.model_validate(spec(starts=starts)).to_silence(sid, now)


def test_new_silences_beyond_the_limit_are_refused_updates_pass() -> None:
    s = Silences(max_silences=2)
    s.upsert(make("a", 0), 0)
    s.upsert(make("b", 0, starts=H // 2), 0)  # pending counts too
    with pytest.raises(SilenceLimitError, match="2 silences are active or pending, at most 2"):
        s.upsert(make("c", 0), 0)
    s.upsert(make("a", 10), 10)  # an update of a live one is no new one
    s.expire("a", 20)
    s.upsert(make("c", 30), 30)
    assert [x.id for x in s.list(30)] == ["a", "c", "b"]


def test_expired_silences_are_kept_up_to_the_limit() -> None:
    s = Silences(max_silences=3)
    for i in range(100):
        s.upsert(make(f"s{i:03d}", i), i)
        s.expire(f"s{i:03d}", i)
        assert len(s.list(i)) <= 3
    assert [x.id for x in s.list(100)] == ["s097", "s098", "s099"]  # the latest ended


@pytest.fixture
def agent() -> NotifierAgent:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"}, notifier={"max_silences": 2})  # type: ignore[arg-type]
    a = NotifierAgent(settings, CollectorRegistry(), ManagerConfig.from_yaml(CONFIG))
    a.positions = {a.commands_topic: {}, a.alerts_topic: {}}
    return a


class Record:
    def __init__(self, data: bytes, position: int, time_ms: int) -> None:
        self.data, self.position, self.time_ms = data, position, time_ms

    def value(self) -> bytes:
        return self.data

    def timestamp(self) -> tuple[int, int]:
        return (1, self.time_ms)

    def offset(self) -> int:
        return self.position


def test_the_api_refuses_a_silence_beyond_the_limit(
    agent: NotifierAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []
    monkeypatch.setattr(agent, "_command", lambda key, cmd: sent.append(key))
    NOW = int(time.time() * 1000)  # at the test, not the import: the suite may run an hour
    for i in range(3):  # two through the commands topic, as the API's commands come back
        body = json.dumps({"kind": "create_silence", "id": f"s{i}", "silence": spec(starts=NOW)})
        agent.handle(agent.commands_topic, 0, Record(body.encode(), i, NOW))
    assert len(agent.manager.silences.list(NOW)) == 2  # the third command was skipped
    skipped = agent.registry.get_sample_value(
        "notifier_invalid_messages_total", {"reason": "bad-command"}
    )
    assert skipped == 1
    status, answer = agent.api_post_silence(json.dumps(spec("web", NOW)).encode())
    assert status == 400 and "at most 2 (notifier.max_silences)" in answer["error"]
    assert sent == []  # nothing reached the commands topic
    status, _ = agent.api_post_silence(json.dumps({**spec("web", NOW), "id": "s0"}).encode())
    assert status == 200 and sent == ["silence:s0"]  # an update passes
