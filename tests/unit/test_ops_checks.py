"""Doctor checks without a broker: result formatting and JSON, topic comparison, disk
thresholds, the chDB lock holder (a real flock), migrations, rule files, receivers
(real sockets, nothing sent) and configuration errors."""

from __future__ import annotations

import fcntl
import json
import os
import socket
from pathlib import Path

import pytest

from monitoring.config import Settings
from monitoring.ops.checks import CheckResult, Status, exit_code, format_lines, to_json, worst
from monitoring.ops.kafka_checks import kafka_release, skew_status, topic_problems
from monitoring.ops.local_checks import (
    GIB,
    check_config,
    check_disk,
    check_receivers,
    check_rules,
    disk_status,
    lock_holder,
    migration_result,
)
from monitoring.runtime.admin import TopicInfo
from monitoring.runtime.topics import topic_specs

RULES = Path(__file__).resolve().parents[2] / "infra" / "rules" / "example.rules.yml"


def test_lines_show_a_fix_only_under_problems() -> None:
    results = [
        CheckResult("broker", Status.OK, "1 broker", "never shown"),
        CheckResult("topics", Status.WARN, "a: 7 partitions", "look"),
        CheckResult("disk", Status.FAIL, "2 % free", "free space"),
    ]
    lines = format_lines(results).splitlines()
    assert lines[0] == "OK    broker  1 broker"
    assert lines[1].startswith("WARN  topics  a: 7")
    assert lines[2].strip() == "fix: look"
    assert lines[3].startswith("FAIL  disk")
    assert lines[4].strip() == "fix: free space"
    assert "never shown" not in format_lines(results)


def test_json_and_exit_status() -> None:
    ok = [CheckResult("a", Status.OK, "fine")]
    warn = [*ok, CheckResult("b", Status.WARN, "hmm")]
    fail = [*warn, CheckResult("c", Status.FAIL, "no", "fix it", 1.23456)]
    assert [exit_code(r) for r in (ok, warn, fail)] == [0, 0, 1]
    assert worst(warn) is Status.WARN
    doc = json.loads(to_json(fail))
    assert doc["status"] == "FAIL"
    assert doc["checks"][2] == {
        "check": "c", "status": "FAIL", "detail": "no", "hint": "fix it", "elapsed_s": 1.235,
    }  # fmt: skip


def test_topic_comparison_against_the_declarations() -> None:
    settings = Settings.load(None)
    specs = topic_specs(settings.kafka)
    actual = {s.name: TopicInfo(s.name, s.partitions, 1, dict(s.config)) for s in specs}
    assert topic_problems(specs, actual) == []
    samples = specs[0]
    actual[samples.name] = TopicInfo(samples.name, samples.partitions + 2, 1, dict(samples.config))
    del actual[specs[-1].name]
    problems = topic_problems(specs, actual)
    assert (Status.WARN, f"{samples.name}: 8 partitions, settings say 6") in problems
    assert (Status.FAIL, f"{specs[-1].name}: missing") in problems


def test_kafka_release_and_skew() -> None:
    assert kafka_release({1: (4, 18)}).startswith("Kafka 4.x")
    assert skew_status(900, 0, 10_000) is Status.OK
    assert skew_status(-1500, 100, 10_000) is Status.WARN
    assert skew_status(1500, 600, 10_000) is Status.OK  # within the measurement's error
    assert skew_status(-20_000, 5, 10_000) is Status.FAIL


def test_disk_thresholds_and_one_line_per_filesystem(tmp_path: Path) -> None:
    assert disk_status(200 * GIB, 1000 * GIB) is Status.OK
    assert disk_status(100 * GIB, 1000 * GIB) is Status.WARN
    assert disk_status(4 * GIB, 10 * GIB) is Status.WARN
    assert disk_status(int(0.5 * GIB), 10 * GIB) is Status.FAIL
    assert disk_status(0, 0) is Status.FAIL
    results = check_disk([("store", tmp_path / "a" / "b"), ("reports", tmp_path)])
    assert len(results) == 1
    assert results[0].detail.startswith(f"store, reports on {tmp_path}")
    assert "GiB free" in results[0].detail


def test_the_chdb_lock_holder_is_named(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("x")
    assert lock_holder(status) is None
    with status.open("rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_holder(status) == os.getpid()
    assert lock_holder(status) is None
    assert lock_holder(tmp_path / "missing") is None


def test_migrations_compared_by_version_and_checksum() -> None:
    wanted = {1: "a", 2: "b", 3: "c"}
    assert migration_result(wanted, dict(wanted), "s").status is Status.OK
    pending = migration_result(wanted, {1: "a"}, "s")
    assert pending.status is Status.FAIL and "pending: 2, 3" in pending.detail
    assert "store migrate" in pending.hint
    assert migration_result(wanted, {**wanted, 4: "d"}, "s").status is Status.WARN
    assert "edited" in migration_result(wanted, {**wanted, 2: "x"}, "s").hint


def with_section(**sections: object) -> Settings:
    base = Settings.load(None)
    return Settings.model_validate({**base.model_dump(by_alias=True), **sections})


def test_rule_files(tmp_path: Path) -> None:
    assert check_rules(Settings.load(None)).status is Status.OK  # none configured
    good = check_rules(with_section(alerting={"rules": [str(RULES)]}))
    assert good.status is Status.OK and "rules in 1 file" in good.detail
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: 'rate(('\n")
    failed = check_rules(with_section(alerting={"rules": [str(RULES), str(bad)]}))
    assert failed.status is Status.FAIL and "1 of 2 files fail" in failed.detail
    missing = check_rules(with_section(alerting={"rules": [str(tmp_path / "nope*.yml")]}))
    assert missing.status is Status.FAIL and "no such file" in missing.detail


def notifier_config(tmp_path: Path, url: str, smarthost: str) -> Path:
    path = tmp_path / "am.yml"
    path.write_text(
        "route: {receiver: hook}\n"
        "receivers:\n"
        f"  - name: hook\n    webhook_configs: [{{url: '{url}'}}]\n"
        "  - name: mail\n    email_configs: [{to: a@b.c, from: m@b.c, "
        f"smarthost: '{smarthost}', require_tls: false}}]\n"
    )
    return path


def test_receivers_reachable_by_tcp_only(tmp_path: Path) -> None:
    with socket.socket() as listener, socket.socket() as closed:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        closed.bind(("127.0.0.1", 0))  # bound, never listening: refused
        dead = closed.getsockname()[1]
        cfg = notifier_config(tmp_path, f"http://127.0.0.1:{port}/hook", f"127.0.0.1:{port}")
        ok = check_receivers(with_section(notifier={"config": str(cfg)}), 2.0)
        assert ok.status is Status.OK and "1 endpoint(s)" in ok.detail
        cfg = notifier_config(tmp_path, f"http://127.0.0.1:{port}/hook", f"127.0.0.1:{dead}")
        down = check_receivers(with_section(notifier={"config": str(cfg)}), 2.0)
        assert down.status is Status.FAIL
        assert f"127.0.0.1:{dead}" in down.detail and "mail" in down.detail
        assert "hook" not in down.detail.split("receivers")[-1]
        listener.settimeout(0.1)
        accepted = 0
        try:
            while True:
                conn, _ = listener.accept()
                assert conn.recv(1024, socket.MSG_DONTWAIT) == b""  # nothing was sent
                conn.close()
                accepted += 1
        except (TimeoutError, BlockingIOError):
            pass
        assert accepted >= 2


def test_a_bad_notifier_config_fails_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "am.yml"
    cfg.write_text("route: {receiver: nobody}\nreceivers: [{name: team}]\n")
    r = check_receivers(with_section(notifier={"config": str(cfg)}), 1.0)
    assert r.status is Status.FAIL and "nobody" in r.detail and str(cfg) in r.hint


def test_a_bad_configuration_fails_with_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("kafka:\n  samples_partitions: 0\n")
    monkeypatch.delenv("MONITORING_CONFIG", raising=False)
    result, settings = check_config(str(bad))
    assert settings is None and result.status is Status.FAIL
    assert "samples_partitions" in result.detail and "MONITORING_" in result.hint
    ok, loaded = check_config(None)
    assert loaded is not None and ok.status is Status.OK
