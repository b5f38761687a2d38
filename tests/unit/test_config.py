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
