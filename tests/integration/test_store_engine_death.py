"""A store whose embedded chDB engine took a fatal signal (an abort in one of its
threads, as librdkafka's assertions did on a broker restart: chDB's signal handler
catches it and the process lives on with an engine that refuses everything) exits
non-zero, naming it, so that its supervisor restarts it; a restarted store serves."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from monitoring.dev.deploy import LocalDeployment

pytestmark = pytest.mark.integration

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}[os.uname().machine]


def _abort_a_thread(pid: int) -> int:
    """SIGABRT to one thread of ``pid`` that is not its main thread (what an abort()
    there does); returns its id."""
    tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    assert tids, "the store runs threads"
    libc = ctypes.CDLL(None, use_errno=True)
    tid = tids[-1]
    assert libc.syscall(SYS_TGKILL, pid, tid, signal.SIGABRT) == 0, ctypes.get_errno()
    return tid


def _exit_code(proc: subprocess.Popen[bytes], timeout: float) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"the store lives on {timeout}s after its engine died") from None


def test_a_store_whose_engine_died_exits_non_zero(kafka_bootstrap: str, tmp_path: Path) -> None:
    d = LocalDeployment(kafka_bootstrap, tmp_path / "p")
    try:
        proc = d.start_store()
        assert d.query("SELECT 1") == [[1]]
        _abort_a_thread(proc.pid)
        # found by the idle store's engine probe (ENGINE_PROBE_S) or a query
        code = _exit_code(proc, 60)
        log = (tmp_path / "p" / "store.log").read_text(errors="replace")
        assert code != 0, log[-2000:]
        assert "engine_dead" in log and "must be restarted" in log, log[-2000:]
        # what a supervisor does: a new process holds the directory and serves
        d.procs.pop("store")  # exited as it should: not a crash of the restarted one
        d.start_store("store2")
        deadline = time.monotonic() + 60
        while True:
            try:
                assert d.query("SELECT count() FROM series") == [[0]]
                break
            except ConnectionError:
                assert time.monotonic() < deadline
                threading.Event().wait(0.2)
    finally:
        d.stop_all()
        d.delete_topics()
