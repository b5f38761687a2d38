"""A deterministic, realistic log corpus: services, levels, templates, exceptions.

Used by tests and ``monitoring bench logs``. 60 message templates (12 per service
family) with variable parts (ids, durations, IPs, paths, hex tokens), levels weighted
like production (mostly INFO), and multi-line Python tracebacks on a share of the
ERROR records. Every line's template index is known, so tests can check mined
template ids against the truth.

>>> lines = generate(5, seed=1)
>>> len(lines), sorted({ln.record["service"] for ln in generate(200, seed=1)})[:2]
(5, ['api', 'auth'])
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

SERVICES = ("api", "auth", "billing", "search", "worker")
# (level, template with {} holes filled by _fill); 12 per service, all distinct shapes.
_BASE = (
    ("INFO", "request {id} completed in {ms} ms with status {status}"),
    ("INFO", "user {user} logged in from {ip}"),
    ("DEBUG", "cache hit for key {hex} after {ms} ms"),
    ("DEBUG", "opened connection {id} to {ip} pool size {n}"),
    ("INFO", "scheduled job {id} for {n} items at priority {n}"),
    ("WARN", "slow query on table orders took {ms} ms rows {n}"),
    ("WARN", "retrying upstream call attempt {n} of 5 backoff {ms} ms"),
    ("INFO", "GET /api/v1/items/{id} returned {status} bytes {n}"),
    ("ERROR", "failed to charge invoice {id} amount {money} currency EUR"),
    ("ERROR", "lost database link to {ip} code {n}"),
    ("FATAL", "out of memory allocating {n} bytes in worker {n}"),
    ("INFO", "config reloaded version {n} checksum {hex}"),
)
_WEIGHTS = {"DEBUG": 6, "INFO": 20, "WARN": 4, "ERROR": 2, "FATAL": 1}
_RAW_LEVELS = {
    "DEBUG": ("debug", "DEBUG", "7"),
    "INFO": ("info", "INFO", "informational", "6"),
    "WARN": ("warning", "WARN", "4"),
    "ERROR": ("error", "err", "3", "ERROR"),
    "FATAL": ("critical", "fatal", "crit", "2"),
}


def templates() -> list[tuple[str, str, str]]:
    """(service, level, template) of every template: 12 per service, 60 in all.

    Each service family words its messages differently, so the 60 are distinct.
    """
    out = []
    for s in SERVICES:
        for level, t in _BASE:
            out.append((s, level, f"{s} {t}"))
    return out


class Line(NamedTuple):
    """One generated record, its template index into ``templates()`` and true level."""

    record: dict[str, Any]
    template: int
    level: str


def _fill(t: str, rng: random.Random) -> str:
    parts = t.split("{")
    out = [parts[0]]
    for p in parts[1:]:
        hole, rest = p.split("}", 1)
        out.append(
            {
                "id": lambda: str(rng.randint(1, 10**7)),
                "ms": lambda: str(rng.randint(1, 5000)),
                "status": lambda: str(rng.choice((200, 201, 404, 500))),
                "user": lambda: str(rng.randint(1000, 99999)),
                "ip": lambda: ".".join(str(rng.randint(0, 255)) for _ in range(4)),
                "hex": lambda: f"{rng.getrandbits(48):012x}",
                "n": lambda: str(rng.randint(0, 10**5)),
                "money": lambda: f"{rng.randint(1, 99999) / 100:.2f}",
            }[hole]()
        )
        out.append(rest)
    return "".join(out)


def _traceback(rng: random.Random) -> str:
    frames = rng.randint(2, 5)
    lines = ["Traceback (most recent call last):"]
    for i in range(frames):
        lines.append(f'  File "/app/svc/module{i}.py", line {rng.randint(10, 900)}, in handler{i}')
        lines.append(f"    result = step{i}(payload)")
    lines.append(f"ConnectionError: peer reset after {rng.randint(1, 999)} ms")
    return "\n".join(lines)


def generate(
    n: int, seed: int = 7, start_ms: int = 1_700_000_000_000, step_ms: int = 5
) -> list[Line]:
    """``n`` records in time order, ``step_ms`` apart; raw level spellings vary."""
    rng = random.Random(seed)
    tpls = templates()
    weights = [_WEIGHTS[level] for _, level, _ in tpls]
    out = []
    for i in range(n):
        k = rng.choices(range(len(tpls)), weights)[0]
        service, level, t = tpls[k]
        exc = _traceback(rng) if level in ("ERROR", "FATAL") and rng.random() < 0.5 else ""
        rec = {
            "timestamp_ms": start_ms + i * step_ms,
            "service": service,
            "host": f"{service}-{rng.randint(0, 2)}",
            "level": rng.choice(_RAW_LEVELS[level]),
            "logger": f"{service}.handlers",
            "message": _fill(t, rng),
            "trace_id": f"{rng.getrandbits(128):032x}" if rng.random() < 0.3 else "",
            "span_id": "",
            "exception": exc,
            "attributes": {"region": rng.choice(("eu", "us"))},
        }
        out.append(Line(rec, k, level))
    return out


def distinct_messages(n: int, seed: int = 0) -> list[str]:
    """``n`` messages of ``n`` distinct templates (words of letters g-z: no digits or hex
    for the masks, 3-22 words so that drain's tree spreads them): the worst case for
    the template bound (``logs.max_templates``).

    >>> distinct_messages(2, seed=1)
    ['rwhi otvhgwovg lwrimg', 'qynkogko rmtvzy wrsjzx uxz']
    """
    rng = random.Random(seed)
    letters = "ghijklmnopqrstuvwxyz"
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        words = [
            "".join(rng.choices(letters, k=rng.randint(3, 9))) for _ in range(3 + len(out) % 20)
        ]
        msg = " ".join(words)
        if msg not in seen:
            seen.add(msg)
            out.append(msg)
    return out
