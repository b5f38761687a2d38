"""Follow log files like ``tail -F`` and turn their lines into log records.

``FileFollower`` reads what was appended to a file since the last poll, follows
rotation (the path now names another inode: the old file is read to its end, then the
new one from its start) and truncation (the file got shorter: read again from the
start). Bytes that are not UTF-8 become U+FFFD and the record is flagged
(``monitoring.invalid_utf8``).

``MultilineJoiner`` glues continuation lines (starting with whitespace, or
``Traceback``/``Caused by:``/``During handling``) onto the record before them, as
Filebeat's multiline setting for stack traces does; ``parse_line`` reads JSON lines
(``level``/``message``/``msg``/``event``/``timestamp``/``time``/``logger``/...; other
keys become attributes) and, for plain text, takes the first level word of the
first 80 characters.

>>> parse_line('2024-01-01 12:00:00 ERROR db: connection lost')[:2]
('ERROR', '2024-01-01 12:00:00 ERROR db: connection lost')
>>> parse_line('{"level": "warn", "msg": "slow", "user": 7}')
('warn', 'slow', 0, '', '', {'user': '7'})
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from typing import Any, BinaryIO, NamedTuple

_LEVEL_WORD = re.compile(
    r"\b(TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|CRITICAL|CRIT|FATAL|ALERT|EMERG|PANIC)\b",
    re.IGNORECASE,
)
_CONTINUATION = re.compile(r"^(?:\s|Traceback \(|Caused by:|During handling of)")
_LEVEL_KEYS = ("level", "severity", "lvl", "levelname", "log.level")
_MESSAGE_KEYS = ("message", "msg", "event")
_TIME_KEYS = ("timestamp", "time", "ts", "@timestamp")
_LOGGER_KEYS = ("logger", "component", "name", "logger_name")
_EXC_KEYS = ("exception", "stack", "stack_trace", "exc_info", "error")

Parsed = tuple[str, str, int, str, str, dict[str, str]]  # level, message, ts_ms, logger, exc


def _timestamp_ms(v: Any) -> int:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return int(v * 1000) if v < 1e11 else int(v)  # seconds or milliseconds
    if isinstance(v, str):
        try:
            return int(datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            return 0
    return 0


def parse_line(text: str) -> Parsed:
    """(level, message, timestamp_ms or 0, logger, exception, attributes) of one record."""
    if text.startswith("{"):
        try:
            obj = json.loads(text.split("\n", 1)[0])
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            tail = text.split("\n", 1)[1] if "\n" in text else ""
            return _from_json(obj, tail)
    m = _LEVEL_WORD.search(text, 0, 80)
    return (m.group(1) if m else "", text, 0, "", "", {})


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> tuple[str | None, Any]:
    for k in keys:
        if k in obj:
            return k, obj[k]
    return None, None


def _from_json(obj: dict[str, Any], tail: str) -> Parsed:
    used = set()
    out: list[Any] = []
    for keys in (_LEVEL_KEYS, _MESSAGE_KEYS, _TIME_KEYS, _LOGGER_KEYS, _EXC_KEYS):
        k, v = _first(obj, keys)
        used.add(k)
        out.append(v)
    level, message, ts, logger, exc = out
    exc_text = "" if exc is None else str(exc)
    if tail:
        exc_text = f"{exc_text}\n{tail}" if exc_text else tail
    attrs = {k: v if isinstance(v, str) else json.dumps(v) for k, v in obj.items() if k not in used}
    return ("" if level is None else str(level),
            "" if message is None else str(message) if isinstance(message, str)
            else json.dumps(message),
            _timestamp_ms(ts), "" if logger is None else str(logger), exc_text, attrs)  # fmt: skip


class MultilineJoiner:
    """Joins continuation lines onto the record before them."""

    def __init__(self, max_lines: int = 500) -> None:
        self.max_lines = max_lines
        self._lines: list[str] = []
        self._bad_utf8 = False

    def feed(self, line: str, bad_utf8: bool = False) -> list[tuple[str, bool]]:
        """Add one line; returns the records it completed (text, had invalid UTF-8)."""
        if self._lines and _CONTINUATION.match(line) and len(self._lines) < self.max_lines:
            self._lines.append(line)
            self._bad_utf8 |= bad_utf8
            return []
        done = self.flush()
        self._lines, self._bad_utf8 = [line], bad_utf8
        return done

    def flush(self) -> list[tuple[str, bool]]:
        """The record being assembled, if any (call when the input goes quiet)."""
        if not self._lines:
            return []
        out = [("\n".join(self._lines), self._bad_utf8)]
        self._lines, self._bad_utf8 = [], False
        return out


class Line(NamedTuple):
    text: str
    bad_utf8: bool


class FileFollower:
    """Reads complete lines appended to ``path``; follows rotation and truncation."""

    def __init__(self, path: str, from_start: bool = False) -> None:
        self.path = path
        self.from_start = from_start
        self._fh: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""
        self.rotations = self.truncations = 0

    def _open(self, at_end: bool) -> bool:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115 - kept open across polls
        except FileNotFoundError:
            return False
        self._fh, self._inode = fh, os.fstat(fh.fileno()).st_ino
        if at_end:
            fh.seek(0, os.SEEK_END)
        self._partial = b""
        return True

    def poll(self) -> list[Line]:
        """Complete lines appended since the last call."""
        if self._fh is None:
            opened = self._open(at_end=not self.from_start)
            self.from_start = True  # a file that appears later is read from its start
            if not opened:
                return []
        assert self._fh is not None
        out = self._read()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return out  # rotated away, new file not there yet: keep reading the old one
        if st.st_ino != self._inode:
            out += self._read(final=True)  # the rest of the rotated file
            self._fh.close()
            self.rotations += 1
            self._open(at_end=False)
            out += self._read()
        elif st.st_size < self._fh.tell():
            self.truncations += 1
            self._fh.seek(0)
            self._partial = b""
            out += self._read()
        return out

    def _read(self, final: bool = False) -> list[Line]:
        assert self._fh is not None
        data = self._partial + self._fh.read()
        parts = data.split(b"\n")
        self._partial = b"" if final else parts.pop()
        if final and parts and parts[-1] == b"":
            parts.pop()
        out = []
        for raw in parts:
            raw = raw.rstrip(b"\r")
            try:
                out.append(Line(raw.decode("utf-8"), False))
            except UnicodeDecodeError:
                out.append(Line(raw.decode("utf-8", "replace"), True))
        return out

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
