"""Log level normalisation: every spelling and number onto six canonical levels.

Canonical levels are OpenTelemetry's short severity texts, with their severity
numbers (the first of each range): ``TRACE`` 1, ``DEBUG`` 5, ``INFO`` 9, ``WARN`` 13,
``ERROR`` 17, ``FATAL`` 21.

Mapping (case-insensitive, surrounding whitespace ignored):

* names: ``trace``/``finest``/``finer``; ``debug``/``fine``/``dbg``; ``info``/
  ``information``/``informational``/``notice``/``config``; ``warn``/``warning``;
  ``err``/``error``/``severe``/``exception``; ``fatal``/``critical``/``crit``/
  ``alert``/``emerg``/``emergency``/``panic``;
* syslog numbers 0-7 (RFC 5424): 0-2 FATAL, 3 ERROR, 4 WARN, 5-6 INFO, 7 DEBUG;
* Python's numeric levels 10/20/30/40/50 and up to 999 (values in between round
  down: 15 -> DEBUG; 50 and above FATAL); 8 and 9 are unknown;
* the empty string: INFO (the contract's default);
* anything else: **INFO**, and ``normalise_level`` says it was unknown so that the
  caller keeps the original in the ``monitoring.level_original`` attribute.

>>> normalise_level("warning"), normalise_level("3"), normalise_level("CRIT")
(('WARN', True), ('ERROR', True), ('FATAL', True))
>>> normalise_level("verbose-ish")
('INFO', False)
"""

from __future__ import annotations

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
SEVERITY = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
UNKNOWN_LEVEL = "INFO"

_NAMES: dict[str, str] = {}
for _canon, _aliases in {
    "TRACE": ("trace", "finest", "finer"),
    "DEBUG": ("debug", "fine", "dbg"),
    "INFO": ("info", "information", "informational", "notice", "config", ""),
    "WARN": ("warn", "warning"),
    "ERROR": ("err", "error", "severe", "exception"),
    "FATAL": ("fatal", "critical", "crit", "alert", "emerg", "emergency", "panic"),
}.items():
    for _a in _aliases:
        _NAMES[_a] = _canon
_SYSLOG = ("FATAL", "FATAL", "FATAL", "ERROR", "WARN", "INFO", "INFO", "DEBUG")
_CACHE: dict[str, tuple[str, bool]] = {}


def _python_level(n: int) -> str:
    if n >= 50:
        return "FATAL"
    return ("DEBUG", "INFO", "WARN", "ERROR")[max(0, n // 10 - 1)]


def normalise_level(raw: str) -> tuple[str, bool]:
    """The canonical level of ``raw`` and whether ``raw`` was a known spelling."""
    hit = _CACHE.get(raw)
    if hit is not None:
        return hit
    key = raw.strip().lower()
    level = _NAMES.get(key)
    if level is not None:
        result = (level, True)
    elif key.isascii() and key.isdigit() and len(key) <= 3:
        n = int(key)
        if n < 8:
            result = (_SYSLOG[n], True)
        elif n >= 10:
            result = (_python_level(n), True)
        else:
            result = (UNKNOWN_LEVEL, False)
    else:
        result = (UNKNOWN_LEVEL, False)
    if len(_CACHE) < 10_000:
        _CACHE[raw] = result
    return result


def at_least(level: str, threshold: str) -> bool:
    """Whether canonical ``level`` is as severe as ``threshold`` or more.

    >>> at_least("FATAL", "ERROR"), at_least("WARN", "ERROR")
    (True, False)
    """
    return SEVERITY[level] >= SEVERITY[threshold]
