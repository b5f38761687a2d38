"""The secure local broker's SCRAM passwords never appear in a command line (every
local user reads ``/proc/<pid>/cmdline``): the storage tool reads them from an
``@argument`` file (one argument a line) of mode 0600, removed after it ran."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from monitoring.dev import local_kafka
from monitoring.dev.local_kafka import LocalKafka


def test_storage_format_takes_the_passwords_from_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = LocalKafka(port=1, data_dir=tmp_path / "k", secure=True)
    monkeypatch.setattr(broker, "_java", lambda: "java")
    monkeypatch.setattr(broker, "_classpath", lambda: "cp")
    seen: dict[str, Any] = {}

    def run(cmd: list[str], **_kw: Any) -> subprocess.CompletedProcess[str]:
        seen["cmd"] = cmd
        files = [Path(a[1:]) for a in cmd if a.startswith("@")]
        assert len(files) == 1, cmd
        seen["mode"] = stat.S_IMODE(files[0].stat().st_mode)
        seen["text"] = files[0].read_text()
        seen["file"] = files[0]
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(local_kafka.subprocess, "run", run)
    broker.format_storage("abc")
    users = ("admin", "monitoring", "monitoring-worker")
    passwords = [broker._password(u) for u in users]
    line = " ".join(seen["cmd"])
    assert all(p not in line for p in passwords), line
    assert "--add-scram" not in line
    lines = seen["text"].splitlines()
    for u, p in zip(users, passwords, strict=True):
        assert f"--add-scram=SCRAM-SHA-512=[name={u},password={p}]" in lines
    assert seen["mode"] == 0o600
    assert not seen["file"].exists()  # removed once the tool ran
