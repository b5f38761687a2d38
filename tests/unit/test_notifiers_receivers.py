"""Receiver configuration: Alertmanager's shape, secrets from env/file, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitoring.alerts.receivers import (
    PAGERDUTY_EVENTS_V2,
    ReceiverConfigError,
    parse_receiver,
    parse_receivers,
)

CONFIG = """
route: {receiver: team-db}
receivers:
  - name: team-db
    email_configs:
      - to: "db@example.com, dba@example.com"
        from: alerts@example.com
        smarthost: mail.example.com:587
        auth_username: alerts
        auth_password_file: %(pwfile)s
    slack_configs:
      - api_url: "${SLACK_URL}"
        channel: "#db"
    pagerduty_configs:
      - routing_key: "pd-${PD_KEY}"
    webhook_configs:
      - url: http://hooks.local/alert
        max_alerts: 20
    alertmanager_configs:
      - url: http://alertmanager:9093
    rate_limit: {per_second: 0.5, burst: 3}
  - name: blackhole
"""


def test_alertmanager_shaped_config_with_secrets(tmp_path: Path) -> None:
    pw = tmp_path / "smtp"
    pw.write_text("hunter2\n")
    env = {"SLACK_URL": "https://hooks.slack.com/services/T/B/X", "PD_KEY": "abc"}
    rs = parse_receivers(yaml.safe_load(CONFIG % {"pwfile": pw}), env=env)
    assert list(rs) == ["team-db", "blackhole"]
    db = rs["team-db"]
    (mail,) = db.email_configs
    assert (mail.host, mail.port, mail.recipients) == (
        "mail.example.com",
        587,
        ["db@example.com", "dba@example.com"],
    )
    assert mail.from_ == "alerts@example.com" and mail.require_tls and not mail.send_resolved
    assert mail.auth_password is not None
    assert mail.auth_password.get_secret_value() == "hunter2"
    assert db.slack_configs[0].api_url.get_secret_value() == env["SLACK_URL"]
    assert db.pagerduty_configs[0].routing_key.get_secret_value() == "pd-abc"
    assert db.pagerduty_configs[0].url == PAGERDUTY_EVENTS_V2
    assert db.pagerduty_configs[0].send_resolved
    assert db.webhook_configs[0].max_alerts == 20
    assert db.alertmanager_configs[0].url.get_secret_value() == "http://alertmanager:9093"
    assert db.rate_limit is not None and (db.rate_limit.per_second, db.rate_limit.burst) == (0.5, 3)
    assert "hunter2" not in repr(rs) and "T/B/X" not in repr(rs) and "pd-abc" not in repr(rs)
    with pytest.raises(ValueError):  # frozen
        db.name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        (
            {"name": "a", "slack_configs": [{}]},
            "receiver 'a': slack_configs[0].api_url: Field required",
        ),
        (
            {"name": "a", "webhook_configs": [{"url": "ftp://x/TOKEN123"}]},
            "receiver 'a': webhook_configs[0].url: url: must be an http(s) URL with a host",
        ),
        (
            {"name": "a", "email_configs": [{"to": "x@y", "from": "f@y", "smarthost": "mail"}]},
            "receiver 'a': email_configs[0].smarthost: must be host:port",
        ),
        (
            {"name": "a", "pagerduty_configs": [{"routing_key": "k", "severity": "huge"}]},
            "receiver 'a': pagerduty_configs[0].severity: Input should be 'critical', 'error', "
            "'warning', 'info' or ''",
        ),
        (
            {"name": "a", "slack_configs": [{"api_url": "${NOPE_UNSET}"}]},
            "receiver 'a': slack_configs[0]: api_url: environment variable NOPE_UNSET is not set",
        ),
        (
            {"name": "a", "webhook_configs": [{"url": "http://h/", "colour": "red"}]},
            "receiver 'a': webhook_configs[0].colour: Extra inputs are not permitted",
        ),
        (
            {"name": "a", "pagerduty_configs": [{"routing_key": "k", "routing_key_file": "/x"}]},
            "receiver 'a': pagerduty_configs[0]: routing_key and routing_key_file are mutually "
            "exclusive",
        ),
        ({"email_configs": []}, "receiver: name: Field required"),
    ],
)
def test_errors_name_receiver_key_and_reason(receiver: dict[str, object], message: str) -> None:
    with pytest.raises(ReceiverConfigError) as info:
        parse_receiver(receiver, env={})
    assert str(info.value) == message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_missing_secret_file_names_key_and_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ReceiverConfigError) as info:
        parse_receiver({"name": "pd", "pagerduty_configs": [{"routing_key_file": str(missing)}]})
    assert str(info.value) == (
        f"receiver 'pd': pagerduty_configs[0]: routing_key_file: cannot read {missing}: "
        "No such file or directory"
    )


def test_secret_values_never_in_error_messages() -> None:
    bad = {"name": "x", "webhook_configs": [{"url": "gopher://h/SECRET-TOKEN-9"}]}
    with pytest.raises(ReceiverConfigError) as info:
        parse_receiver(bad)
    assert "SECRET-TOKEN-9" not in str(info.value)


def test_duplicate_names_and_bad_shapes() -> None:
    with pytest.raises(ReceiverConfigError, match=r"receiver 'a': name: duplicate \(entry 1\)"):
        parse_receivers([{"name": "a"}, {"name": "a"}])
    with pytest.raises(ReceiverConfigError, match="receivers: must be a list"):
        parse_receivers({"receivers": {"name": "a"}})
    with pytest.raises(ReceiverConfigError, match="receiver: must be a mapping"):
        parse_receivers(["a"])


def test_env_expansion_only_in_secret_fields() -> None:
    r = parse_receiver(
        {"name": "s", "slack_configs": [{"api_url": "http://h/x", "text": "${NOT_EXPANDED}"}]},
        env={},
    )
    assert r.slack_configs[0].text == "${NOT_EXPANDED}"
