"""Checkpoints that count whole or not at all, on a compacted topic, without transactions.

A checkpoint is several records (one per changed key of a partition's state) and a
crash can cut it anywhere: the broker keeps each partition's records in order, so a
prefix of them lands. Restoring a state half old and half new double-counts or loses
what the cut separated. Each logical key therefore has two physical keys (``key`` and
``key + SLOT1``): a checkpoint writes every changed key into the slot that does *not*
hold its last committed value, each value stamped with the checkpoint's sequence
number, and then the commit record with that number. On restore, for every key the
value with the highest sequence number not above the commit record's wins; the records
of a checkpoint whose commit record never landed are ignored, and the values they
would have replaced are still there, in the other slot.

A deleted key is written as a deletion marker; once that is committed, the next
checkpoint tombstones the key's other slot, then the marker's (in this order, so any
prefix of them still reads as deleted). A table without a commit record was written
before this scheme: its records are the committed values, in slot 0.

>>> shadow, table = Shadow.load({})
>>> records, attempt = shadow.records({b"a": b"1"})
>>> [k for k, _ in records]
[b'a\\xff1', b'\\xff\\xfecommit']
>>> Shadow.load(dict(records))[1], Shadow.load(dict(records[:1]))[1]
({b'a': b'1'}, {})
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import NamedTuple

MAGIC = b"\xff\xfeCK"  # never the start of a UTF-8, JSON, msgpack or pickle value
COMMIT_KEY = b"\xff\xfecommit"
SLOT1 = b"\xff1"  # 0xff never occurs in UTF-8: no agent's key ends with it
_HEADER = struct.Struct(">4sqc")  # magic, sequence number, b"v" value / b"d" deleted
_COMMIT = struct.Struct(">4sq")
MAX_SEQ = 1 << 62  # a forged commit record beyond this would overflow every next checkpoint
OVERHEAD = _HEADER.size + len(SLOT1)  # bytes a physical record adds to a logical one
Physical = list[tuple[bytes, bytes | None]]


def physical_key(key: bytes, slot: int) -> bytes:
    """The physical key of ``key``'s slot 0 or 1."""
    return key + SLOT1 if slot else key


class Attempt(NamedTuple):
    """One checkpoint's write: its number and the slot each changed key went to."""

    seq: int
    to_slot1: frozenset[bytes]
    to_slot0: frozenset[bytes]
    deleted: frozenset[bytes]
    cleaned: frozenset[bytes]


class Shadow:
    """Which slot holds each key's committed value, for one state partition."""

    def __init__(self) -> None:
        self.seq = 0  # of the last committed checkpoint
        self.in_slot1: set[bytes] = set()  # keys whose committed value is in slot 1
        self.doomed: set[bytes] = set()  # keys committed as deleted, slots still there
        self.purge: list[bytes] = []  # physical keys to tombstone first (unreadable state)

    @classmethod
    def load(cls, physical: Mapping[bytes, bytes]) -> tuple[Shadow, dict[bytes, bytes]]:
        """The shadow and the committed logical table of a state partition's records.

        Raises ValueError on records this scheme did not write."""
        shadow = cls()
        commit = physical.get(COMMIT_KEY)
        if commit is not None:  # none: nothing committed yet, or written before the scheme
            if len(commit) != _COMMIT.size or commit[:4] != MAGIC:
                raise ValueError("not a commit record")
            _, shadow.seq = _COMMIT.unpack(commit)
            if not 0 <= shadow.seq < MAX_SEQ:
                raise ValueError(f"commit record number out of range: {shadow.seq}")
        best: dict[bytes, tuple[int, int, bytes, bytes]] = {}  # key -> seq, slot, kind, value
        for k, v in physical.items():
            if k == COMMIT_KEY:
                continue
            key, slot = (k[: -len(SLOT1)], 1) if k.endswith(SLOT1) else (k, 0)
            if v[:4] == MAGIC:
                if len(v) < _HEADER.size:
                    raise ValueError(f"a record header cut short: {k[:40]!r}")
                _, seq, kind = _HEADER.unpack_from(v)
                value = v[_HEADER.size :]
            elif slot == 0:  # from before the scheme, never rewritten since
                seq, kind, value = -1, b"v", v
            else:
                raise ValueError(f"a slot-1 record without a header: {k[:40]!r}")
            if seq > shadow.seq:
                continue  # a checkpoint that did not complete
            if key not in best or seq > best[key][0]:
                best[key] = (seq, slot, kind, value)
        table: dict[bytes, bytes] = {}
        for key, (_, slot, kind, value) in best.items():
            if slot:
                shadow.in_slot1.add(key)
            if kind == b"d":
                shadow.doomed.add(key)
            else:
                table[key] = value
        return shadow, table

    def records(self, changes: Mapping[bytes, bytes | None]) -> tuple[Physical, Attempt]:
        """The physical records of a checkpoint of ``changes`` (None deletes a key), in
        write order, the commit record last; pass the attempt to ``committed`` once
        they are all on the broker."""
        seq = self.seq + 1
        out: Physical = [(k, None) for k in self.purge]
        cleaned = frozenset(k for k in self.doomed if k not in changes)
        for key in cleaned:
            marker = 1 if key in self.in_slot1 else 0
            out.append((physical_key(key, 1 - marker), None))
            out.append((physical_key(key, marker), None))
        to1: set[bytes] = set()
        to0: set[bytes] = set()
        deleted: set[bytes] = set()
        for key, value in changes.items():
            slot = 0 if key in self.in_slot1 else 1
            (to1 if slot else to0).add(key)
            kind = b"v" if value is not None else b"d"
            if value is None:
                deleted.add(key)
            out.append((physical_key(key, slot), _HEADER.pack(MAGIC, seq, kind) + (value or b"")))
        out.append((COMMIT_KEY, _COMMIT.pack(MAGIC, seq)))
        attempt = Attempt(seq, frozenset(to1), frozenset(to0), frozenset(deleted), cleaned)
        return out, attempt

    def committed(self, attempt: Attempt) -> None:
        """The attempt's records are all on the broker: they are the state now."""
        self.seq = attempt.seq
        self.purge = []
        for key in attempt.cleaned:
            self.doomed.discard(key)
            self.in_slot1.discard(key)
        self.in_slot1 |= attempt.to_slot1
        self.in_slot1 -= attempt.to_slot0
        self.doomed -= attempt.to_slot1 | attempt.to_slot0
        self.doomed |= attempt.deleted
