"""``kill -USR1`` on any ``monitoring`` process writes its threads' stacks to stderr
(what ``monitoring chaos`` collects from a run that did not converge)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

# main() with its command replaced by a wait: what a stuck process looks like
STUCK = """
import time
import monitoring.cli as cli
def stuck():
    print("ready", flush=True)
    time.sleep(60)
cli.app = stuck
cli.main()
"""


def test_sigusr1_dumps_every_thread_and_the_process_goes_on() -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", STUCK], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert p.stdout is not None and p.stderr is not None
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGUSR1)
        err = b""
        deadline = time.monotonic() + 30
        while b"in stuck" not in err and time.monotonic() < deadline:
            if select.select([p.stderr], [], [], 1.0)[0]:
                err += os.read(p.stderr.fileno(), 65536)
        assert b"most recent call first" in err and b"in stuck" in err, err
        assert p.poll() is None  # the dump does not stop it
    finally:
        p.kill()
        p.wait(30)
