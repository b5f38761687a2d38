"""Many log lines of one service and host as parallel columns (a decoded ``LogBatch``).

Pure Python. ``LogColumns`` is the input of ``PartitionLogs.process_batch``: line ``i``
is the ``i``-th item of every list; attributes are sparse (only lines that have some).
``StoredColumns`` is its output for storage: the lines kept, normalised, with their
template ids and their index in the input (``line_indexes``); attributes are keyed by
position in these lists.

>>> c = LogColumns("api", "h1", [5], ["info"], [""], ["hi"], [""], [""], [""], {})
>>> c.lines, c.record(0)["message"]
(1, 'hi')
"""

from __future__ import annotations

from typing import Any, NamedTuple

MAX_BATCH_LINES = 4096  # the stored row identity keeps 12 bits for the line index


class LogColumns(NamedTuple):
    """Lines of one service and host in parallel lists."""

    service: str
    host: str
    timestamps_ms: list[int]
    levels: list[str]
    loggers: list[str]
    messages: list[str]
    trace_ids: list[str]
    span_ids: list[str]
    exceptions: list[str]
    attributes: dict[int, dict[str, str]]  # line index -> attributes (sparse)
    utf8_replaced: frozenset[int] = frozenset()  # lines with U+FFFD replacements

    @property
    def lines(self) -> int:
        return len(self.timestamps_ms)

    def record(self, i: int) -> dict[str, Any]:
        """Line ``i`` as a decoded ``LogRecord``."""
        return {
            "timestamp_ms": self.timestamps_ms[i], "service": self.service, "host": self.host,
            "level": self.levels[i], "logger": self.loggers[i], "message": self.messages[i],
            "trace_id": self.trace_ids[i], "span_id": self.span_ids[i],
            "exception": self.exceptions[i], "attributes": self.attributes.get(i, {}),
        }  # fmt: skip

    def check(self) -> str | None:
        """What is wrong with the shape (lists of different lengths, too many lines,
        attributes of lines that do not exist), or None."""
        n = len(self.timestamps_ms)
        if n > MAX_BATCH_LINES:
            return f"{n} lines, at most {MAX_BATCH_LINES} in a batch"
        for name in ("levels", "loggers", "messages", "trace_ids", "span_ids", "exceptions"):
            if len(getattr(self, name)) != n:
                return f"{len(getattr(self, name))} {name} for {n} timestamps"
        bad = [i for i in self.attributes if not 0 <= i < n]
        if bad:
            return f"attributes of line {bad[0]}, the batch has {n} lines"
        return None


class StoredColumns(NamedTuple):
    """The kept lines of a batch, normalised, as parallel lists."""

    service: str
    host: str
    line_indexes: list[int]
    timestamps_ms: list[int]
    levels: list[str]
    severities: list[int]
    loggers: list[str]
    messages: list[str]
    trace_ids: list[str]
    span_ids: list[str]
    exceptions: list[str]
    attributes: dict[int, dict[str, str]]  # position in these lists -> attributes (sparse)
    template_ids: list[int]

    @property
    def lines(self) -> int:
        return len(self.line_indexes)
