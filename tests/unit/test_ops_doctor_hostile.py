"""`monitoring doctor`'s receivers check with placeholder and hostile configs: the
shipped example's receivers (127.0.0.1:9095 and :2525, nothing listening) are a WARN,
not a FAIL that makes `monitoring doctor` exit 1 on a fresh checkout; a real receiver
down is still a FAIL; a name whose resolution hangs cannot hold the doctor."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from monitoring.config import Settings
from monitoring.ops import local_checks
from monitoring.ops.checks import Status, exit_code
from monitoring.ops.local_checks import SHIPPED_NOTIFIER, check_receivers


def settings_with(notifier_config: Path, **reporting: Any) -> Settings:
    base = Settings.load(None)
    data = base.model_dump(by_alias=True)
    data["notifier"] = {**data["notifier"], "config": str(notifier_config)}
    if reporting:
        data["reporting"] = {**data["reporting"], **reporting}
    return Settings.model_validate(data)


@pytest.fixture
def nothing_listens(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every connection refused (whatever listens on this shared machine's ports)."""
    tried: list[tuple[str, int]] = []

    def refuse(host: str, port: int, timeout_s: float) -> str:
        tried.append((host, port))
        return "Connection refused"

    monkeypatch.setattr(local_checks, "_connect", refuse)
    return tried


def test_the_shipped_example_s_receivers_are_a_warning(nothing_listens: Any) -> None:
    r = check_receivers(settings_with(SHIPPED_NOTIFIER), 1.0)
    assert r.status is Status.WARN, r
    assert "placeholder" in r.detail and "127.0.0.1:9095" in r.detail
    assert "notifier.config" in r.hint
    assert exit_code([r]) == 0
    assert ("127.0.0.1", 9095) in nothing_listens  # still tried: a listener there is OK


def test_a_copy_of_the_example_with_real_names_still_fails(
    nothing_listens: Any, tmp_path: Path
) -> None:
    cfg = tmp_path / "am.yml"
    cfg.write_text(
        "route: {receiver: hook}\nreceivers:\n"
        "  - name: hook\n    webhook_configs: [{url: 'http://hooks.internal.corp:9095/x'}]\n"
        "  - name: mail\n    email_configs: [{to: oncall@corp.io, from: m@corp.io, "
        "smarthost: 'smtp.corp.io:25', require_tls: false}]\n"
        "  - name: sample\n    email_configs: [{to: team@example.com, from: m@example.com, "
        "smarthost: '127.0.0.1:2525', require_tls: false}]\n"
    )
    r = check_receivers(settings_with(cfg), 1.0)
    assert r.status is Status.FAIL, r
    names = r.detail.split("receivers ", 1)[1]
    assert names.startswith("hook, mail")  # the real ones first, the example after
    only_example = tmp_path / "example.yml"
    only_example.write_text(
        "route: {receiver: sample}\nreceivers:\n"
        "  - name: sample\n    email_configs: [{to: team@example.com, from: m@example.com, "
        "smarthost: '127.0.0.1:2525', require_tls: false}]\n"
        "  - name: hook\n    webhook_configs: [{url: 'http://alerts.example:9095/x'}]\n"
    )
    assert check_receivers(settings_with(only_example), 1.0).status is Status.WARN
    # the reports' mail to a real address is real, to example.com a placeholder
    real_mail = settings_with(
        only_example, schedule="daily", email={"to": "ops@corp.io", "smarthost": "smtp.corp.io:587"}
    )
    assert check_receivers(real_mail, 1.0).status is Status.FAIL


def test_a_name_whose_resolution_hangs_cannot_hold_the_doctor(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``socket.create_connection``'s timeout does not cover name resolution: a
    resolver that never answers held the check (and the doctor) as long as it did."""
    release = threading.Event()
    real = socket.getaddrinfo

    def hanging(host: Any, *args: Any, **kwargs: Any) -> Any:
        if str(host).endswith(".hangs.corp"):
            release.wait(300)
            raise socket.gaierror("released")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging)
    cfg = tmp_path / "am.yml"
    hooks = "".join(
        f"  - name: h{i}\n    webhook_configs: [{{url: 'http://r{i}.hangs.corp:80/x'}}]\n"
        for i in range(40)
    )
    cfg.write_text("route: {receiver: h0}\nreceivers:\n" + hooks)
    done: list[Any] = []
    t = threading.Thread(target=lambda: done.append(check_receivers(settings_with(cfg), 0.5)))
    t0 = time.monotonic()
    t.start()
    t.join(60)
    try:
        assert done, "the receivers check still waits on the resolver after 60 s"
        r = done[0]
        assert r.status is Status.FAIL and "timed out" in r.detail
        print(f"40 hanging names: the check gave up after {time.monotonic() - t0:.1f} s")
    finally:
        release.set()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e9"])
def test_a_timeout_that_is_not_a_finite_number_of_seconds_is_refused(value: str) -> None:
    """``--timeout nan`` passed typer's ``min=0.1`` (comparisons with NaN are false) and
    every bounded call then waited for ever."""
    from typer.testing import CliRunner

    from monitoring.cli import app

    runner = CliRunner()
    for args in (["doctor", "--timeout", value], ["dlq", "list", "--timeout", value]):
        result = runner.invoke(app, args, env={"MONITORING_CONFIG": ""})
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "--timeout" in result.output
