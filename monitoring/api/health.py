"""Liveness and readiness from a process's health dict: one rule for every process.

A process's ``health()`` (``GET /healthz``) is a dict with ``status`` (``ok`` or why
not) and fields of its own. Some fields are shared by convention, and readiness reads
only those:

- ``status``: anything but ``ok`` (``starting``, ``degraded``, ``stalled``, ``stuck``,
  ``unavailable``) means not ready;
- ``restoring``: true, or a non-empty list of partitions, while state is being read
  back from a changelog;
- ``catching_up``: a non-empty list of partitions still reading their backlog;
- ``not_ready``: a list of reasons in the process's own words.

A process is *alive* unless its status says it cannot recover by itself (``stuck``: an
insert hanging past its bound; ``dead``: the store's embedded engine died): then a
supervisor should restart it.

>>> readiness_reasons({"status": "ok"})
[]
>>> readiness_reasons({"status": "degraded", "restoring": [1, 2], "catching_up": [0]})
['status degraded', 'restoring state: partitions 1, 2', 'catching up a backlog: partitions 0']
>>> is_alive({"status": "stuck"}), is_alive({"status": "dead"}), is_alive({"status": "degraded"})
(False, False, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

NOT_ALIVE = frozenset({"stuck", "dead"})
MAX_REASONS = 20
MAX_REASON_CHARS = 300


def _partitions(value: Any) -> str:
    items = list(value)[:16] if isinstance(value, list | tuple | set | frozenset) else []
    more = f" (+{len(value) - 16})" if items and len(value) > 16 else ""
    return ", ".join(str(x)[:20] for x in items) + more


def readiness_reasons(health: Mapping[str, Any]) -> list[str]:
    """Why the process is not ready (empty: ready), from the conventional fields."""
    reasons: list[str] = []
    status = str(health.get("status", "ok"))[:40]
    if status != "ok":
        reasons.append(f"status {status}")
    restoring = health.get("restoring")
    if restoring:
        parts = _partitions(restoring)
        reasons.append(f"restoring state: partitions {parts}" if parts else "restoring state")
    catching = health.get("catching_up")
    if catching:
        reasons.append(f"catching up a backlog: partitions {_partitions(catching)}")
    extra = health.get("not_ready")
    if isinstance(extra, list | tuple):
        reasons += [str(r) for r in extra]
    return bounded_reasons(reasons)


def bounded_reasons(reasons: list[str]) -> list[str]:
    """At most ``MAX_REASONS`` reasons of at most ``MAX_REASON_CHARS`` characters each."""
    out = [r[:MAX_REASON_CHARS] for r in reasons[:MAX_REASONS]]
    if len(reasons) > MAX_REASONS:
        out.append(f"... and {len(reasons) - MAX_REASONS} more")
    return out


def is_alive(health: Mapping[str, Any]) -> bool:
    """False only when the process says it cannot recover by itself."""
    return str(health.get("status", "ok")) not in NOT_ALIVE
