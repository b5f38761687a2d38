"""Doctor check results: a status, a one-line detail and a fix hint; formatting, JSON.

>>> r = [CheckResult("broker", Status.OK, "1 broker"), CheckResult("disk", Status.FAIL,
...      "2% free on /", "free space on /")]
>>> print(format_lines(r))
OK    broker  1 broker
FAIL  disk    2% free on /
              fix: free space on /
>>> exit_code(r)
1
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """A check's outcome: OK, WARN (works, but look at it) or FAIL (exit status 1)."""

    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class CheckResult:
    """One line of the checklist: what was checked, how it went, how to fix it."""

    name: str
    status: Status
    detail: str
    hint: str = ""
    elapsed_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The result for ``--json``."""
        return {
            "check": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "hint": self.hint,
            "elapsed_s": round(self.elapsed_s, 3),
        }


def worst(results: Sequence[CheckResult]) -> Status:
    """FAIL if any failed, else WARN if any warned, else OK.

    >>> worst([]).value
    'OK'
    """
    statuses = {r.status for r in results}
    for s in (Status.FAIL, Status.WARN):
        if s in statuses:
            return s
    return Status.OK


def exit_code(results: Sequence[CheckResult]) -> int:
    """1 when any check failed, else 0 (warnings do not fail a script)."""
    return 1 if worst(results) is Status.FAIL else 0


def format_lines(results: Sequence[CheckResult]) -> str:
    """Plain text, one line per check (a ``fix:`` line under each WARN or FAIL with a
    hint), names padded to one column."""
    width = max((len(r.name) for r in results), default=0)
    lines = []
    for r in results:
        lines.append(f"{r.status.value:<5} {r.name:<{width}}  {r.detail}".rstrip())
        if r.hint and r.status is not Status.OK:
            lines.append(f"{'':<5} {'':<{width}}  fix: {r.hint}")
    return "\n".join(lines)


def to_json(results: Sequence[CheckResult]) -> str:
    """``{"status": worst, "checks": [...]}`` for scripts."""
    return json.dumps(
        {"status": worst(results).value, "checks": [r.as_dict() for r in results]}, indent=2
    )
