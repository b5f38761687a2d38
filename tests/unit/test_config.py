"""Settings: YAML shape, env overrides, durations, and errors that name the key."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from monitoring.config import ConfigError, Settings, parse_duration


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for k in list(os.environ):
        if k.startswith("MONITORING_"):
            monkeypatch.delenv(k)


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "monitoring.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    ("text", "expected"),
    [("500ms", timedelta(milliseconds=500)), ("10s", timedelta(seconds=10)),
     ("1m", timedelta(minutes=1)), ("7d", timedelta(days=7)), (30, timedelta(seconds=30))],
)  # fmt: skip
def test_durations(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_example_file_is_the_defaults() -> None:
    example = Path(__file__).parents[2] / "monitoring.example.yaml"
    assert Settings.load(example) == Settings()


def test_yaml_values_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "aggregation:\n  windows: [1m, 10s, 5m]\nstorage:\n  batch_size: 10\n")
    monkeypatch.setenv("MONITORING_STORAGE__BATCH_SIZE", "20")
    monkeypatch.setenv("MONITORING_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1234")
    s = Settings.load(path)
    assert s.aggregation.windows_ms == [10_000, 60_000, 300_000]  # sorted
    assert s.storage.batch_size == 20  # env wins over the file
    assert s.kafka.bootstrap_servers == "127.0.0.1:1234"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("aggregation:\n  windows: [10x]\n", "aggregation.windows.0"),
        ("aggregation:\n  windows: []\n", "at least one window"),
        ("storage:\n  dsn: mysql://x\n", "storage.dsn"),
        ("storage:\n  retention:\n    samples: forever\n", "storage.retention.samples"),
        ("kafka:\n  samples_partitions: 0\n", "kafka.samples_partitions"),
        ("kafak:\n  bootstrap_servers: x\n", "kafak"),
        ("- just\n- a list\n", "top level must be a mapping"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_files_fail_fast_naming_file_key_and_reason(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        Settings.load(path)
    assert str(path) in str(e.value)
    assert fragment in str(e.value)


def test_missing_file_named_by_env_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MONITORING_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="file not found"):
        Settings.load()


# --- values that would start a process that does nothing, or the wrong thing ----------

# every Duration field where 0 makes no sense; the others (linger, allowed_lateness,
# settle) take 0 and refuse negatives
POSITIVE_DURATIONS = [
    "collection.interval", "kafka.retention", "kafka.dead_letter_retention",
    "kafka.status_retention",
    "aggregation.idle_timeout", "aggregation.checkpoint_interval",
    "aggregation.max_future_skew", "aggregation.max_record_skew",
    "storage.flush_interval", "storage.series_refresh", "storage.retention.samples",
    "storage.retention.aggregates",
    "storage.retention.logs", "storage.retention.deliveries",
    "logs.window", "logs.idle_timeout", "logs.checkpoint_interval",
    "anomaly.idle_eviction", "anomaly.checkpoint_interval",
    "alerting.lookback", "alerting.grace", "alerting.checkpoint_interval",
    "alerting.resend_interval",
    "notifier.checkpoint_interval",
    "model_metrics.join_horizon", "model_metrics.drift_interval",
    "model_metrics.checkpoint_interval",
    "ui.refresh", "ui.live_poll", "ui.max_range", "system_collector.stat_timeout",
    "reporting.retention", "reporting.email.timeout", "receive.delta_ttl", "receive.retry_after",
    "health.heartbeat_interval", "health.stale_after", "health.max_close_delay",
    "python_api.wait",
    "ha.session_timeout", "ha.heartbeat_interval",
]  # fmt: skip
ZERO_OK_DURATIONS = ["collection.linger", "aggregation.allowed_lateness", "alerting.settle"]


def nested(key: str, value: object) -> str:
    """YAML setting one dotted key."""
    *sections, last = key.split(".")
    lines = [f"{'  ' * i}{s}:" for i, s in enumerate(sections)]
    return "\n".join([*lines, f"{'  ' * len(sections)}{last}: {value}"]) + "\n"


@pytest.mark.parametrize("key", POSITIVE_DURATIONS)
@pytest.mark.parametrize("value", ["0s", "0", -5])
def test_zero_or_negative_durations_are_refused(tmp_path: Path, key: str, value: object) -> None:
    path = write(tmp_path, nested(key, value))
    with pytest.raises(ConfigError) as e:
        Settings.load(path)
    assert f"{key}: " in str(e.value)
    assert "greater than 0" in str(e.value)


@pytest.mark.parametrize("key", ZERO_OK_DURATIONS)
def test_zero_is_fine_where_it_means_none_but_negatives_are_not(tmp_path: Path, key: str) -> None:
    s = Settings.load(write(tmp_path, nested(key, "0s")))
    section, field = key.split(".")
    assert getattr(getattr(s, section), field) == timedelta(0)
    with pytest.raises(ConfigError, match=f"{key}: .*must not be negative"):
        Settings.load(write(tmp_path, nested(key, -1)))


def test_every_duration_field_is_checked() -> None:
    """A new Duration field gets a decision: listed above, or it fails here."""

    def durations(model: type, prefix: str) -> list[str]:
        out = []
        for name, f in model.model_fields.items():  # type: ignore[attr-defined]
            if f.annotation is timedelta:
                out.append(prefix + name)
            elif isinstance(f.annotation, type) and hasattr(f.annotation, "model_fields"):
                out += durations(f.annotation, f"{prefix}{name}.")
        return out

    mine = set(POSITIVE_DURATIONS) | set(ZERO_OK_DURATIONS) | {"anomaly.window", "alerting.window"}
    listed = {k for k in durations(Settings, "") if not k.startswith(("api.", "storage.query."))}
    assert listed == mine  # (window sizes: checked against aggregation.windows below)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("alerting:\n  window: 15s\n", "alerting.window: 15s is not one of aggregation.windows "
         "(10s, 1m)"),
        ("aggregation:\n  windows: [1m]\nalerting:\n  window: 1m\n",
         "anomaly.window: 10s is not one of aggregation.windows (1m)"),
        ("kafka:\n  bootstrap_servers: ''\n", "kafka.bootstrap_servers: "),
        ("kafka:\n  bootstrap_servers: ' '\n", "kafka.bootstrap_servers: "),
        ("kafka:\n  bootstrap_servers: 'a:9092,'\n", "kafka.bootstrap_servers: "),
        ("kafka:\n  topic_prefix: 'my prefix.'\n", "kafka.topic_prefix: "),
        ("kafka:\n  topic_prefix: 'a/b.'\n", "kafka.topic_prefix: "),
        ("kafka:\n  topic_prefix: 'ünicode.'\n", "kafka.topic_prefix: "),
        (f"kafka:\n  topic_prefix: '{'x' * 201}'\n", "at most 200 characters"),
    ],
)  # fmt: skip
def test_settings_that_would_silently_do_nothing_fail_at_load(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as e:
        Settings.load(write(tmp_path, text))
    assert fragment in str(e.value)


def test_good_kafka_and_window_settings_load(tmp_path: Path) -> None:
    text = (
        "kafka:\n  bootstrap_servers: 'a:9092,b:9093'\n  topic_prefix: 'team-a_1.'\n"
        "aggregation:\n  windows: [1m]\nalerting:\n  window: 1m\nanomaly:\n  enabled: false\n"
    )
    s = Settings.load(write(tmp_path, text))
    assert s.alerting.window == timedelta(minutes=1)
    assert Settings.load(write(tmp_path, "kafka:\n  topic_prefix: ''\n")).kafka.topic_prefix == ""


@pytest.mark.parametrize("text", ["\u0661\u0660m", "\uff11\uff10s", "\u00b2s"])
def test_durations_take_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    "url",
    [
        "https://reader:s3cret@mon.example.com",  # the password would be in every message
        "https://@mon.example.com",
        "https://mon.example.com/a\n<!channel>",  # urlsplit drops the newline, we did not
        "https://mon.example.com/\tx",
        "https://mon.example.com/a b",
        "https://mon.example.com/\u202e",  # an invisible direction override
    ],
)
def test_the_report_link_base_url_carries_no_credentials_or_controls(url: str) -> None:
    from monitoring.config import ReportingSettings

    with pytest.raises(ValueError, match="link_base_url"):
        ReportingSettings(link_base_url=url)


def test_a_report_link_base_url_is_kept_without_its_trailing_slash() -> None:
    from monitoring.config import ReportingSettings

    cfg = ReportingSettings(link_base_url="https://mon.example.com:8443/ui/")
    assert cfg.link_base_url == "https://mon.example.com:8443/ui"
