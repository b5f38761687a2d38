"""Opt-in memory tracing of a long-running process, for finding where resident memory
goes (a soak's RSS growth): ``MONITORING_TRACEMALLOC=<file>`` in a worker's or store's
environment (``{role}`` and ``{pid}`` in the name are filled in).

A daemon thread starts :mod:`tracemalloc` (one frame per allocation: the Python line
that allocated) and every ``MONITORING_TRACEMALLOC_EVERY_S`` seconds (default 60)
appends to the file: the RSS, what tracemalloc traces (live Python allocations), glibc's
``mallinfo2`` (bytes malloc holds from the system and how much of it is in use: the rest
is fragmentation or free memory not given back) and the top ``MONITORING_TRACEMALLOC_TOP``
(default 25) lines by growth since the first snapshot. With
``MONITORING_TRACEMALLOC_TRIM=1`` it calls ``malloc_trim(0)`` after each dump and
records the RSS after it (memory glibc could return). Tracing costs CPU (each
allocation is recorded); never on in production.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

import psutil

ENV = "MONITORING_TRACEMALLOC"
MiB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def mallinfo() -> dict[str, int] | None:
    """glibc's heap figures (bytes): ``heap`` held from the system (brk and mmap
    arenas), ``mmapped`` (large blocks), ``in_use`` and ``free`` within the heap;
    ``None`` where there is no ``mallinfo2`` (not glibc, or glibc < 2.33)."""
    libc = _libc()
    fn = getattr(libc, "mallinfo2", None) if libc is not None else None
    if fn is None:
        return None
    fn.restype = _MallInfo2
    mi = fn()
    return {"heap": mi.arena, "mmapped": mi.hblkhd, "in_use": mi.uordblks, "free": mi.fordblks}


def malloc_trim() -> bool:
    """Ask glibc to return free heap memory to the system; False where it cannot."""
    libc = _libc()
    fn = getattr(libc, "malloc_trim", None) if libc is not None else None
    return bool(fn(0)) if fn is not None else False


class MemTrace:
    """The tracing thread (module docstring)."""

    def __init__(self, path: Path, every_s: float = 60.0, top: int = 25, trim: bool = False):
        self.path, self.every_s, self.top, self.trim = path, every_s, top, trim
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="memtrace", daemon=True)
        self._first: tracemalloc.Snapshot | None = None
        self._t0 = time.monotonic()

    def start(self) -> MemTrace:
        tracemalloc.start(1)
        self._first = self._snapshot()
        self.thread.start()
        return self

    @staticmethod
    def _snapshot() -> tracemalloc.Snapshot:
        return tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )

    def dump(self) -> str:
        """One report (what is appended to the file)."""
        snap = self._snapshot()
        traced, peak = tracemalloc.get_traced_memory()
        rss = psutil.Process().memory_info().rss
        lines = [
            f"== t={time.monotonic() - self._t0:.0f}s rss={rss / MiB:.1f}MiB "
            f"traced={traced / MiB:.1f}MiB traced_peak={peak / MiB:.1f}MiB"
        ]
        mi = mallinfo()
        if mi is not None:
            lines.append("mallinfo " + " ".join(f"{k}={v / MiB:.1f}MiB" for k, v in mi.items()))
        assert self._first is not None
        for stat in snap.compare_to(self._first, "lineno")[: self.top]:
            frame = stat.traceback[0]
            lines.append(
                f"{stat.size_diff / MiB:+9.2f}MiB {stat.size / MiB:8.2f}MiB "
                f"{stat.count_diff:+9d} {frame.filename}:{frame.lineno}"
            )
        if self.trim:
            malloc_trim()
            lines.append(f"after malloc_trim rss={psutil.Process().memory_info().rss / MiB:.1f}MiB")
        return "\n".join(lines) + "\n"

    def _loop(self) -> None:
        while not self.stop.wait(self.every_s):
            report = self.dump()
            with self.path.open("a") as f:
                f.write(report)


def start_from_env(role: str, environ: Mapping[str, str] = os.environ) -> MemTrace | None:
    """Start tracing when ``MONITORING_TRACEMALLOC`` names a file (module docstring)."""
    target = environ.get(ENV)
    if not target:
        return None
    path = Path(target.format(role=role, pid=os.getpid()))
    return MemTrace(
        path,
        every_s=float(environ.get(f"{ENV}_EVERY_S", "60")),
        top=int(environ.get(f"{ENV}_TOP", "25")),
        trim=environ.get(f"{ENV}_TRIM", "") == "1",
    ).start()
