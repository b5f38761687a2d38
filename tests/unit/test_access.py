"""The start-up permission check (``runtime.access``): it never passes a resource it
could not check, and it names each one it could not."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AclOperation as Op
from structlog.testing import capture_logs

from monitoring.config import KafkaSettings
from monitoring.runtime import access
from monitoring.runtime.access import compare, needed

K = KafkaSettings(topic_prefix="p.")
WANT = {("topic", "p.a"): {"Read", "Describe"}, ("group", "p.g"): {"Read"}}
EVERYTHING = [Op.READ, Op.WRITE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS]


def test_everything_reported_and_granted_is_nothing_missing() -> None:
    assert compare(WANT, {"p.a": EVERYTHING}, {"p.g": [Op.READ]}) == ([], [])
    assert compare(WANT, {"p.a": [Op.ALL]}, {"p.g": [Op.ALL]}) == ([], [])


def test_each_missing_operation_is_named() -> None:
    missing, unchecked = compare(WANT, {"p.a": [Op.DESCRIBE]}, {"p.g": []})
    assert missing == ["Read on group 'p.g'", "Read on topic 'p.a'"]
    assert unchecked == []


def test_one_resource_without_operations_does_not_pass_the_others() -> None:
    """The old check returned nothing missing as soon as one topic reported None."""
    want = {**WANT, ("topic", "p.b"): {"Write"}}
    missing, unchecked = compare(want, {"p.a": None, "p.b": [Op.READ]}, {"p.g": []})
    assert missing == ["Read on group 'p.g'", "Write on topic 'p.b'"]
    assert unchecked == ["topic 'p.a'"]


def test_a_resource_not_described_is_unchecked_not_passed() -> None:
    missing, unchecked = compare(WANT, {}, {"p.g": []})
    assert missing == ["Read on group 'p.g'"]
    assert unchecked == ["topic 'p.a'"]


def test_a_broker_reporting_no_operations_at_all_leaves_everything_unchecked() -> None:
    assert compare(WANT, {"p.a": None}, {"p.g": None}) == ([], ["group 'p.g'", "topic 'p.a'"])


def _done(value: Any = None, error: Exception | None = None) -> Future[Any]:
    f: Future[Any] = Future()
    if error is not None:
        f.set_exception(error)
    else:
        f.set_result(value)
    return f


class _Admin:
    """Topics described as granted, except ``failing`` (a transient error every time);
    groups as refused."""

    def __init__(self, failing: str) -> None:
        self.failing = failing

    def describe_topics(self, names: Any, **_kw: Any) -> dict[str, Future[Any]]:
        out = {}
        for n in names.topic_names:
            if n == self.failing:
                out[n] = _done(error=KafkaException(KafkaError(KafkaError._TIMED_OUT)))
            else:
                out[n] = _done(SimpleNamespace(authorized_operations=EVERYTHING))
        return out

    def describe_consumer_groups(self, names: list[str], **_kw: Any) -> dict[str, Future[Any]]:
        return {n: _done(SimpleNamespace(authorized_operations=[])) for n in names}


def test_a_failing_description_is_a_warning_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "admin_client", lambda _k: _Admin("p.alerts"))
    with capture_logs() as logs:
        missing = access.missing_permissions(K, "store", timeout_s=0.5)
    assert missing == ["Read on group 'p.store'"]
    warned = [e for e in logs if e["event"] == "permissions_unchecked"]
    assert len(warned) == 1 and warned[0]["resources"] == ["topic 'p.alerts'"], logs


def test_what_a_process_checks_at_start() -> None:
    want = needed(K, "store")
    assert want[("group", "p.store")] == {"Read"}
    assert want[("topic", "p.alerts")] == {"Read", "Describe", "DescribeConfigs"}
    assert want[("topic", "p.dead-letter")] == {"Write", "Describe", "DescribeConfigs"}
    assert ("topic", "p.metrics.late") not in want
