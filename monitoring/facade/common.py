"""What every façade shares: settings and mode resolution, waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar, cast

from monitoring.config import Settings

Mode = Literal["pipeline", "local"]
MODES: tuple[str, ...] = ("pipeline", "local")
T = TypeVar("T")


def resolve(settings: Settings | None, mode: str | None) -> tuple[Settings, Mode]:
    """The settings (``monitoring.yaml`` or defaults when None) and the mode (``mode``,
    else ``python_api.mode``); ValueError for a mode that is neither."""
    s = settings if settings is not None else Settings.load()
    m = mode if mode is not None else s.python_api.mode
    if m not in MODES:
        raise ValueError(f"mode must be 'pipeline' or 'local', not {m!r}")
    return s, cast(Mode, m)


class ResultTimeout(TimeoutError):
    """The pipeline did not produce the expected results in time."""


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, poll_s: float = 0.25) -> T:
    """Call ``probe`` until it returns something other than None, or raise ResultTimeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = probe()
        if got is not None:
            return got
        if time.monotonic() >= deadline:
            raise ResultTimeout(f"{what}: not there after {timeout_s:g} s")
        time.sleep(poll_s)  # polling a condition, with a deadline
