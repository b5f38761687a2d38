"""`monitoring perf analyze|suggest|runs` with a store URL that does not answer, and with
ends far from now: errors that say so, never another store's data or a traceback (an
``--until`` of 1e20 overflowed the queries' int64 milliseconds and ``time.gmtime``)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from monitoring.cli import app

runner = CliRunner()


@pytest.fixture
def dead_url() -> Iterator[str]:
    """A loopback port that refuses connections."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A local chDB directory that exists: the fallback would have read it."""
    (tmp_path / "chdb" / "metadata").mkdir(parents=True)
    return {"MONITORING_CONFIG": "", "MONITORING_STORAGE__DSN": f"chdb://{tmp_path / 'chdb'}"}


@pytest.mark.parametrize(
    "args",
    [
        ["analyze", "--service", "api"],
        ["suggest", "--service", "api"],
        ["runs"],
    ],
)
def test_a_named_store_that_does_not_answer_is_an_error(
    args: list[str], dead_url: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--url`` named a store; when it did not answer, the local directory's data was
    analysed instead (a CI gate with --fail-on-regression judged the wrong data)."""
    import monitoring.query.client as client

    opened: list[object] = []
    monkeypatch.setattr(client, "local_store", lambda s: opened.append(s))
    result = runner.invoke(app, ["perf", *args, "--url", dead_url], env=env)
    assert result.exit_code == 1, result.output
    assert f"no store answers at {dead_url}" in result.output
    assert opened == []


@pytest.mark.parametrize("until", ["1e300", "1e20", "-5", "nan", "inf"])
def test_an_end_outside_any_calendar_is_refused(
    until: str, dead_url: str, env: dict[str, str]
) -> None:
    for command in (["analyze", "--service", "api"], ["suggest", "--service", "api"], ["runs"]):
        result = runner.invoke(
            app, ["perf", *command, "--until", until, "--url", dead_url], env=env
        )
        assert result.exit_code == 2, (command, until, result.output, result.exception)
        assert "--until" in result.output


def test_a_body_file_without_a_size_is_read_only_to_the_bound(tmp_path: Path) -> None:
    """``/dev/zero`` has a size of 0: the check passed and ``read_bytes`` read until
    memory ran out."""
    result = runner.invoke(
        app,
        ["perf", "bench", "http://127.0.0.1:1/", "--rate", "1", "--duration", "1s",
         "--no-record", "--body-file", "/dev/zero"],
        env={"MONITORING_CONFIG": ""},
    )  # fmt: skip
    assert result.exit_code == 2, (result.output, result.exception)
    assert "larger than" in result.output


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/", "http://[::1/", "http://h:abc/"])
def test_a_malformed_target_url_is_a_usage_error(url: str) -> None:
    """urlsplit is lazy: the port's ValueError came out of the run as a traceback."""
    result = runner.invoke(
        app, ["perf", "bench", url, "--rate", "1", "--duration", "1s", "--no-record"],
        env={"MONITORING_CONFIG": ""},
    )  # fmt: skip
    assert result.exit_code == 2, (result.output, result.exception)
    assert "not a valid URL" in result.output
