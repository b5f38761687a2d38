"""The notifier's command intake without a broker: the HTTP API's validation (400s)
and records of the commands topic that no longer validate (skipped and counted)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from monitoring.agents.notifier import NotifierAgent
from monitoring.alerts.manager_config import ManagerConfig
from monitoring.alerts.model import rfc3339
from monitoring.config import Settings

H = 3_600_000
CONFIG = "route: {receiver: team, group_by: [alertname]}\nreceivers: [{name: team}]\n"


@dataclass
class Record:
    """What ``handle`` reads of a confluent-kafka message."""

    data: bytes | None
    at_ms: int
    position: int

    def value(self) -> bytes | None:
        return self.data

    def timestamp(self) -> tuple[int, int]:
        return (1, self.at_ms)

    def offset(self) -> int:
        return self.position


@pytest.fixture
def agent() -> NotifierAgent:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:1"})  # type: ignore[arg-type]
    a = NotifierAgent(settings, CollectorRegistry(), ManagerConfig.from_yaml(CONFIG))
    a.positions = {a.commands_topic: {}, a.alerts_topic: {}}
    return a


def silence(value: str, regex: bool = True, **kw: Any) -> dict[str, Any]:
    return {
        "matchers": [{"name": "host", "value": value, "isRegex": regex, "isEqual": True}],
        "startsAt": rfc3339(0),
        "endsAt": rfc3339(H),
        "createdBy": "ann",
        "comment": "maintenance",
        **kw,
    }


def command(sid: str, body: dict[str, Any]) -> bytes:
    return json.dumps({"kind": "create_silence", "id": sid, "silence": body}).encode()


def test_a_bad_silence_in_the_commands_topic_is_skipped_and_counted(agent: NotifierAgent) -> None:
    records = [
        Record(command("s1", silence("db.*")), 0, 0),
        Record(command("old", silence(r"(a)\1")), 0, 1),  # an older version took it
        Record(command("long", silence("a", comment="c" * 5000)), 0, 2),
        Record(b"not json", 0, 3),
        Record(command("s2", silence("web")), 0, 4),
    ]
    with capture_logs() as logs:
        for r in records:
            agent.handle(agent.commands_topic, 0, r)
    assert [s.id for s in agent.manager.silences.list(0)] == ["s1", "s2"]
    assert agent.positions[agent.commands_topic] == {0: 5}
    skipped = agent.registry.get_sample_value(
        "notifier_invalid_messages_total", {"reason": "bad-command"}
    )
    assert skipped == 3
    rejected = [e for e in logs if e["event"] == "command_rejected"]
    assert len(rejected) == 3
    assert "invalid regex" in rejected[0]["error"] and "RE2" in rejected[0]["error"]
    assert "comment has 5000 characters" in rejected[1]["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (silence(r"(a)\1"), "invalid regex in matcher host=~"),
        (silence("x(?=y)"), "RE2: no lookaround or backreferences"),
        (silence("a" * 2000), "matcher value has 2000 characters, at most 1024 allowed"),
        (silence("a", comment="c" * 5000), "comment has 5000 characters, at most 4096"),
        (silence("a", createdBy="b" * 300), "createdBy has 300 characters, at most 256"),
        ({**silence("a"), "matchers": [{"name": f"l{i}", "value": "a"} for i in range(65)]},
         "65 matchers, at most 64 allowed"),
        ({**silence("a"), "id": "i" * 300}, "id has 300 characters, at most 256"),
        ([silence("a")], "the body must be a JSON object, not list"),
    ],
)  # fmt: skip
def test_the_api_answers_400_naming_the_problem(
    agent: NotifierAgent, body: Any, message: str
) -> None:
    status, answer = agent.api_post_silence(json.dumps(body).encode())
    assert status == 400 and message in answer["error"], answer


@pytest.mark.parametrize("api", ["api_expire_silence", "api_ack"])
def test_other_posts_refuse_a_body_that_is_not_an_object(agent: NotifierAgent, api: str) -> None:
    status, answer = getattr(agent, api)(b"[1, 2]")
    assert (status, answer) == (400, {"error": "the body must be a JSON object, not list"})
    status, answer = getattr(agent, api)(json.dumps({"id": "i" * 300, "by": "b" * 300}).encode())
    assert status == 400 and "at most 256" in answer["error"]
