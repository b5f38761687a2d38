"""Dead letters as values: parsed headers, selections, grouping, the replay policy and
decoding "as far as it goes". No I/O (the broker side is ``dlq_kafka``).

A dead letter is the original key and bytes with why, where from and at which stage in
headers (``runtime/outputs.py``: ``x-reason``, ``x-error``, ``x-source-topic``,
``x-source-partition``, ``x-source-offset``, ``x-stage``, and ``x-truncated``,
``x-payload-sha256``, ``x-key-truncated``, ``x-rejected-samples``, ``x-batch-index``
where they apply). Headers come from the broker and are treated as hostile: each value
is cut to ``MAX_HEADER_BYTES`` and decoded with replacement.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitoring.runtime.outputs import MAX_HEADER_BYTES
from monitoring.wire.codec import HEADER_LEN, MARKER, AvroCodec, DecodeError

# Reasons a change on our side can fix (a schema file added, a limit raised, a bug
# fixed, the store's table altered): replaying after the fix is the point.
REPLAYABLE_REASONS = frozenset(
    {"unknown-fingerprint", "cardinality", "processing-error", "insert-rejected"}
)
# Reasons that are the record's own fault: replaying the same bytes fails the same way.
PERMANENT_REASONS = frozenset(
    {
        "bad-marker", "truncated", "not-bytes", "bad-body", "trailing-bytes", "oversized",
        "wrong-record", "unexpected-record", "not-metric-batch", "bad-batch",
        "non-finite-value", "timestamp-too-old", "timestamp-in-future", "too-many-labels",
        "label-too-long", "bad-name", "bad-label-name", "batch-length-mismatch",
        "bad-series-index", "bad-series-key", "out-of-range", "invalid-alert",
    }
)  # fmt: skip
REPLAY_HEADER = "x-replayed-from"  # "<dead-letter topic>:<partition>:<offset>" on a replay
MAX_SELECTION_ITEMS = 1000
_DIGITS = re.compile(r"[0-9]{1,19}")
_ITEM = re.compile(r"(?:(?P<p>[0-9]{1,6}):)?(?P<a>[0-9]{1,19})(?:-(?P<b>[0-9]{1,19}))?")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        value = value.encode("utf-8", "replace")
    return value[:MAX_HEADER_BYTES].decode("utf-8", "replace")


def _int(text: str) -> int | None:
    """A header's number: ASCII digits only (``"²".isdigit()`` is true, and ``int``
    of it raises: one such header stopped every scan of the topic)."""
    return int(text) if _DIGITS.fullmatch(text) else None


@dataclass(frozen=True)
class DeadLetter:
    """One record of the dead-letter topic, its headers parsed."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    reason: str = ""
    error: str = ""
    stage: str = ""
    source_topic: str = ""
    source_partition: int | None = None
    source_offset: int | None = None
    truncated_from: int | None = None  # x-truncated: the payload's original size
    key_truncated_from: int | None = None
    rejected: str = ""  # x-rejected-samples: part of a batch refused, the rest applied
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def coordinates(self) -> str:
        """``<partition>:<offset>`` on the dead-letter topic (the replay ledger's key)."""
        return f"{self.partition}:{self.offset}"

    @classmethod
    def from_record(
        cls,
        partition: int,
        offset: int,
        timestamp_ms: int,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | str | None]] | None,
    ) -> DeadLetter:
        """Parse a consumed record; unknown headers are kept as text, none trusted.

        >>> d = DeadLetter.from_record(0, 7, 1000, b"k", b"v", [("x-reason", b"bad-marker"),
        ...     ("x-source-topic", b"m.metrics.samples"), ("x-source-offset", b"12")])
        >>> d.reason, d.source_topic, d.source_offset, d.source_partition
        ('bad-marker', 'm.metrics.samples', 12, None)
        """
        h: dict[str, str] = {}
        kept: list[tuple[str, str]] = []
        for name, raw in list(headers or [])[:64]:
            text = _text(raw)
            kept.append((str(name)[:128], text))
            h.setdefault(str(name), text)
        return cls(
            partition=partition,
            offset=offset,
            timestamp_ms=timestamp_ms,
            key=key,
            value=value,
            reason=h.get("x-reason", "") or "(none)",
            error=h.get("x-error", ""),
            stage=h.get("x-stage", ""),
            source_topic=h.get("x-source-topic", ""),
            source_partition=_int(h.get("x-source-partition", "")),
            source_offset=_int(h.get("x-source-offset", "")),
            truncated_from=_int(h.get("x-truncated", "")),
            key_truncated_from=_int(h.get("x-key-truncated", "")),
            rejected=h.get("x-rejected-samples", ""),
            headers=tuple(kept),
        )


# -- selections ---------------------------------------------------------------------


class SelectionError(ValueError):
    """A selection that does not parse; the message says which item and why."""


@dataclass(frozen=True)
class Selection:
    """Offsets of the dead-letter topic: ``12``, ``10-20``, ``0:10-20`` (partition 0),
    comma-separated; empty means every record (within the other filters).

    >>> s = Selection.parse("3,10-12,1:5")
    >>> [s.contains(0, o) for o in (3, 4, 11)], s.contains(1, 5), s.contains(0, 5)
    ([True, False, True], True, False)
    >>> s.first_offset(0), s.last_offset(0)
    (3, 12)
    """

    ranges: tuple[tuple[int, int, int], ...] = ()  # (partition, first, last) inclusive

    @classmethod
    def parse(cls, text: str | None) -> Selection:
        """Parse; raises SelectionError naming the bad item."""
        if text is None or not text.strip():
            return cls()
        if len(text) > 16_384:
            raise SelectionError(f"selection of {len(text)} characters: at most 16384")
        items = [i.strip() for i in text.split(",")]
        if len(items) > MAX_SELECTION_ITEMS:
            raise SelectionError(f"{len(items)} items: at most {MAX_SELECTION_ITEMS}")
        ranges = []
        for item in items:
            m = _ITEM.fullmatch(item)
            if not m:
                raise SelectionError(
                    f"{item[:40]!r}: use OFFSET, FIRST-LAST or PARTITION:FIRST-LAST"
                )
            a = int(m.group("a"))
            b = int(m.group("b")) if m.group("b") else a
            if b < a:
                raise SelectionError(f"{item!r}: the range ends before it starts")
            ranges.append((int(m.group("p") or 0), a, b))
        return cls(tuple(ranges))

    @property
    def everything(self) -> bool:
        return not self.ranges

    def contains(self, partition: int, offset: int) -> bool:
        return self.everything or any(
            p == partition and a <= offset <= b for p, a, b in self.ranges
        )

    def first_offset(self, partition: int) -> int | None:
        """The lowest selected offset of ``partition`` (None: nothing there, or all)."""
        return min((a for p, a, _ in self.ranges if p == partition), default=None)

    def last_offset(self, partition: int) -> int | None:
        return max((b for p, _, b in self.ranges if p == partition), default=None)


@dataclass(frozen=True)
class Filter:
    """What ``list``, ``show`` and ``replay`` keep: a selection, reasons, source topics
    (with or without the deployment's prefix) and a time range (ms, inclusive)."""

    selection: Selection = Selection()
    reasons: frozenset[str] = frozenset()
    topics: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    prefix: str = ""

    def keeps(self, d: DeadLetter) -> bool:
        """True if ``d`` is selected.

        >>> f = Filter(reasons=frozenset({"cardinality"}), topics=frozenset({"metrics.samples"}),
        ...            prefix="m.")
        >>> d = DeadLetter(0, 1, 5, None, None, reason="cardinality",
        ...                source_topic="m.metrics.samples")
        >>> f.keeps(d), f.keeps(DeadLetter(0, 1, 5, None, None, reason="bad-body"))
        (True, False)
        """
        if not self.selection.contains(d.partition, d.offset):
            return False
        if self.reasons and d.reason not in self.reasons:
            return False
        if self.topics and not (
            d.source_topic in self.topics
            or (
                d.source_topic.startswith(self.prefix)
                and d.source_topic[len(self.prefix) :] in self.topics
            )
        ):
            return False
        if self.since_ms is not None and d.timestamp_ms < self.since_ms:
            return False
        return self.until_ms is None or d.timestamp_ms <= self.until_ms


# -- grouping -------------------------------------------------------------------------


@dataclass
class Group:
    """Dead letters of one reason from one source topic (in one time bucket when
    grouping by time: ``bucket_ms`` is its start, else None)."""

    reason: str
    source_topic: str
    count: int = 0
    first_ms: int = 0
    last_ms: int = 0
    stages: set[str] = field(default_factory=set)
    first_offset: int = 0
    last_offset: int = 0
    replayable: bool = False
    bucket_ms: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = {
            "reason": self.reason,
            "source_topic": self.source_topic,
            "count": self.count,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "stages": sorted(self.stages),
            "offsets": f"{self.first_offset}-{self.last_offset}",
            "replayable": self.replayable,
        }
        if self.bucket_ms is not None:
            out["bucket_ms"] = self.bucket_ms
        return out


def group(
    letters: Iterable[DeadLetter], max_groups: int = 10_000, bucket_ms: int | None = None
) -> list[Group]:
    """Dead letters grouped by (reason, source topic), and by time buckets of
    ``bucket_ms`` when given, with counts and first/last seen: the largest groups first
    (by time, then size, with buckets); groups beyond ``max_groups`` are folded into
    one ``(other)`` group (reasons come from producers of the dead-letter topic).

    >>> gs = group([DeadLetter(0, i, 100 + i, None, None, reason=r, source_topic="t")
    ...             for i, r in enumerate(["a", "b", "a"])])
    >>> [(g.reason, g.count, g.first_ms, g.last_ms) for g in gs]
    [('a', 2, 100, 102), ('b', 1, 101, 101)]
    >>> [(g.bucket_ms, g.count) for g in group([DeadLetter(0, i, t, None, None, reason="a")
    ...                                          for i, t in enumerate([5, 12, 17])], bucket_ms=10)]
    [(0, 1), (10, 2)]
    """
    groups: dict[tuple[int, str, str], Group] = {}
    for d in letters:
        bucket = d.timestamp_ms - d.timestamp_ms % bucket_ms if bucket_ms else 0
        k = (bucket, d.reason, d.source_topic)
        g = groups.get(k)
        if g is None:
            if len(groups) >= max_groups:
                k = (0, "(other)", "(other)")
                g = groups.get(k)
            if g is None:
                g = groups[k] = Group(k[1], k[2], 0, d.timestamp_ms, d.timestamp_ms)
                g.first_offset = g.last_offset = d.offset
                g.bucket_ms = k[0] if bucket_ms else None
        g.count += 1
        g.first_ms = min(g.first_ms, d.timestamp_ms)
        g.last_ms = max(g.last_ms, d.timestamp_ms)
        g.first_offset = min(g.first_offset, d.offset)
        g.last_offset = max(g.last_offset, d.offset)
        if d.stage and len(g.stages) < 16:
            g.stages.add(d.stage)
        g.replayable = g.reason in REPLAYABLE_REASONS
    return sorted(
        groups.values(), key=lambda g: (g.bucket_ms or 0, -g.count, g.reason, g.source_topic)
    )


# -- the replay policy --------------------------------------------------------------


@dataclass(frozen=True)
class ReplayVerdict:
    """Whether a dead letter may be replayed; ``forcible``: ``--force`` overrides."""

    allowed: bool
    why: str = ""
    forcible: bool = True


def replay_verdict(d: DeadLetter, force: bool = False) -> ReplayVerdict:
    """May ``d`` be replayed? Cut payloads never (the original bytes are gone), nor a
    dead letter without a source topic; permanent reasons, unknown reasons and partly
    applied batches only with ``force``.

    >>> replay_verdict(DeadLetter(0, 1, 0, None, b"x", reason="cardinality", source_topic="t"))
    ReplayVerdict(allowed=True, why='', forcible=True)
    >>> replay_verdict(DeadLetter(0, 1, 0, None, b"x", reason="bad-marker", source_topic="t")).why
    "reason 'bad-marker' is permanent: the same bytes fail the same way (--force to replay anyway)"
    """
    if d.truncated_from is not None or d.key_truncated_from is not None:
        size = d.truncated_from if d.truncated_from is not None else d.key_truncated_from
        return ReplayVerdict(
            False, f"payload cut to fit the dead-letter topic (was {size} bytes): "
            "the original bytes are not in the dead letter", forcible=False,
        )  # fmt: skip
    if d.value is None:
        return ReplayVerdict(False, "no value (a tombstone): nothing to replay", forcible=False)
    if not d.source_topic:
        return ReplayVerdict(False, "no x-source-topic: give --to-topic", forcible=False)
    if force:
        return ReplayVerdict(True)
    if d.rejected:
        return ReplayVerdict(
            False, "part of this batch was applied (x-rejected-samples): a replay would "
            "apply that part twice (--force to replay anyway)",
        )  # fmt: skip
    if d.reason in PERMANENT_REASONS:
        return ReplayVerdict(
            False, f"reason {d.reason!r} is permanent: the same bytes fail the same way "
            "(--force to replay anyway)",
        )  # fmt: skip
    if d.reason not in REPLAYABLE_REASONS:
        return ReplayVerdict(
            False, f"reason {d.reason!r} is not known to be fixable (--force to replay anyway)"
        )
    return ReplayVerdict(True)


# -- decoding as far as it goes -----------------------------------------------------

PREVIEW_BYTES = 64
MAX_DECODE_BYTES = 1 << 20
MAX_RECORD_CHARS = 2000
_PRINTABLE = frozenset(string.printable.encode()) - frozenset(b"\t\n\r\x0b\x0c")


@dataclass(frozen=True)
class Decoding:
    """How far a payload decodes: ``status`` is ``decoded`` or the step it stopped at
    (``empty``, ``bad-marker``, ``truncated``, ``unknown-fingerprint``, ``bad-body``,
    ``trailing-bytes``, ``too-large``, ``cut``); the schema when the fingerprint is
    known; the record as bounded JSON when it decoded; always a bounded byte preview."""

    status: str
    size: int
    detail: str = ""
    fingerprint: str = ""
    schema: str = ""
    version: int | None = None
    record: str = ""
    hex: str = ""
    text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in ("", None)}


def preview(data: bytes, limit: int = PREVIEW_BYTES) -> tuple[str, str]:
    """The first ``limit`` bytes as hex and as printable ASCII (``.`` elsewhere).

    >>> preview(b"ab\\x00\\xff", 3)
    ('616200', 'ab....')
    """
    head = data[:limit]
    text = "".join(chr(b) if b in _PRINTABLE else "." for b in head)
    more = "..." if len(data) > limit else ""
    return head.hex(), text + more


def _json_bounded(record: Any, limit: int) -> str:
    text = json.dumps(record, default=lambda o: o.hex() if isinstance(o, bytes) else repr(o))
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def decode_as_far(
    codec: AvroCodec,
    value: bytes | None,
    truncated_from: int | None = None,
    max_decode_bytes: int = MAX_DECODE_BYTES,
    max_record_chars: int = MAX_RECORD_CHARS,
) -> Decoding:
    """Decode ``value`` (Avro single-object encoding) as far as it goes, bounded: marker,
    fingerprint (known? which schema and version?), body; a body over
    ``max_decode_bytes`` is not decoded; a cut payload (``x-truncated``) is not either.

    >>> c = AvroCodec.from_directory()
    >>> decode_as_far(c, b"\\x00garbage").status
    'bad-marker'
    """
    if value is None:
        return Decoding("empty", 0, "no value (a tombstone)")
    size = len(value)
    hx, text = preview(value)
    base: dict[str, Any] = {"size": size, "hex": hx, "text": text}
    if size >= 2 and value[:2] != MARKER:
        return Decoding(
            "bad-marker", detail=f"first bytes {value[:2].hex()} are not c301 (not Avro "
            "single-object encoding)", **base,
        )  # fmt: skip
    if size < HEADER_LEN:
        return Decoding("truncated", detail=f"{size} bytes, the header needs {HEADER_LEN}", **base)
    fp = int.from_bytes(value[2:HEADER_LEN], "little")
    base["fingerprint"] = f"{fp:016x}"
    known = {v.fingerprint: v for v in codec.versions()}.get(fp)
    if known is None:
        return Decoding(
            "unknown-fingerprint", detail="in no schema version of this build: a newer "
            "writer, or not ours", **base,
        )  # fmt: skip
    base["schema"], base["version"] = known.name, known.version
    if truncated_from is not None:
        return Decoding("cut", detail=f"payload cut from {truncated_from} bytes", **base)
    if size > max_decode_bytes:
        return Decoding("too-large", detail=f"not decoded: over {max_decode_bytes} bytes", **base)
    try:
        decoded = codec.decode(value)
    except DecodeError as e:
        return Decoding(e.reason, detail=e.detail[:500], **base)
    return Decoding("decoded", record=_json_bounded(decoded.record, max_record_chars), **base)


def summarise(letters: Sequence[DeadLetter]) -> dict[str, int]:
    """Counts by reason (for a one-line summary).

    >>> summarise([DeadLetter(0, 1, 0, None, None, reason="a")] * 2)
    {'a': 2}
    """
    out: dict[str, int] = {}
    for d in letters:
        out[d.reason] = out.get(d.reason, 0) + 1
    return out
