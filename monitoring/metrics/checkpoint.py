"""Binary form of the aggregation agent's changelog records (internal state, not a
public contract).

A series record holds the series' applied offset, its counter carry and its open
windows; the series' name and labels are its Kafka key (the series key). Layout,
little-endian, version 2:

    u8 version=2, i64 applied_offset, f64 carry, i64 carry_ts, u32 n_windows, then per
    window:
    i64 window_ms, i64 start_ms, i64 count, f64 sum, f64 min, f64 max, f64 last,
    i64 last_ts, f64 first, i64 first_ts, f64 increase, i64 resets, u8 mode, then
      mode 0 (exact): u32 n, n x f64 values
      mode 1 (sketch): i64 zero_count, i32 pos_offset, u32 n, n x i64 bins,
                       i32 neg_offset, u32 m, m x i64 bins

Version 1 (tests/golden/aggregation/v1*.bin) lacks the carry and the four counter
fields of a window: it is read with no carry (NaN, ``NO_TS``) and windows without
counter keys, which close with their counter fields None.

A partition record (its own version, still 1) is ``u8 version=1, i64 checkpoint_offset,
i64 max_event_ms, i64 watermark_ms``, then ``i64 refused_count, i64 refused_published`` (samples
refused by the series limits so far, a cumulative counter, and the count published
last) when the count is not 0 (a record written at 3e9719c holds the count alone,
read with nothing published), then ``i64 idle_event_ms`` (the greatest event time at
the last idle close; the refused pair written too, 0s if need be) once the partition
has been closed idle (a record without it reads as never closed idle). Written with
``struct`` and ``array`` rather than Avro: fastavro took about 35 µs per series
record, this about 3 µs, and every changed series is written at every checkpoint.

>>> state = {"applied_offset": 7, "carry": 3.0, "carry_ts": 5, "windows": []}
>>> unpack_series(pack_series(state)) == state
True
"""

from __future__ import annotations

import math
import struct
from array import array
from typing import Any

from monitoring.metrics.samples import parse_series_key

VERSION = 2  # of series records: the aggregation state's version (golden files)
META_VERSION = 1
NO_TS = -(2**62)
_HEAD_V1 = struct.Struct("<BqI")
_WIN_V1 = struct.Struct("<qqqddddqB")
_HEAD = struct.Struct("<BqdqI")
_WIN = struct.Struct("<qqqddddqdqdqB")
_U32 = struct.Struct("<I")
_SKETCH_HEAD = struct.Struct("<qiI")
_NEG_HEAD = struct.Struct("<iI")
_META = struct.Struct("<Bqqq")
_REFUSED = struct.Struct("<qq")
_REFUSED_ALONE = struct.Struct("<q")  # the layout of 3e9719c (tests/golden/aggregation)
_IDLE = struct.Struct("<q")
NO_IDLE = -(2**62)  # aggregator.NO_WATERMARK: never closed idle


class CheckpointError(ValueError):
    """A changelog record is not in a format this version reads."""


def pack_series(state: dict[str, Any]) -> bytes:
    """Bytes of a series state dict (``applied_offset``, ``windows``)."""
    head = (VERSION, state["applied_offset"], state["carry"], state["carry_ts"])
    parts = [_HEAD.pack(*head, len(state["windows"]))]
    for w in state["windows"]:
        values = w["values"]
        parts.append(
            _WIN.pack(
                w["window_ms"], w["start_ms"], w["count"], w["sum"], w["min"], w["max"],
                w["last"], w["last_ts"], w["first"], w["first_ts"], w["increase"],
                w["resets"], 0 if values is not None else 1,
            )
        )  # fmt: skip
        if values is not None:
            parts.append(_U32.pack(len(values)))
            parts.append(array("d", values).tobytes())
        else:
            pos, neg = w["pos_bins"], w["neg_bins"]
            parts.append(_SKETCH_HEAD.pack(w["zero_count"], w["pos_offset"], len(pos)))
            parts.append(array("q", pos).tobytes())
            parts.append(_NEG_HEAD.pack(w["neg_offset"], len(neg)))
            parts.append(array("q", neg).tobytes())
    return b"".join(parts)


def unpack_series(data: bytes) -> dict[str, Any]:
    """Inverse of ``pack_series`` (and the reader of version 1 records)."""
    version = data[0] if data else None
    if version == VERSION:
        _, applied, carry, carry_ts, n = _HEAD.unpack_from(data, 0)
        pos, win_struct = _HEAD.size, _WIN
    elif version == 1:
        _, applied, n = _HEAD_V1.unpack_from(data, 0)
        carry, carry_ts, pos, win_struct = math.nan, NO_TS, _HEAD_V1.size, _WIN_V1
    else:
        raise CheckpointError(f"series state version {version}, this code reads 1 and {VERSION}")
    windows = []
    for _ in range(n):
        fields = win_struct.unpack_from(data, pos)
        pos += win_struct.size
        w_ms, start, count, s, lo, hi, last, last_ts = fields[:8]
        mode = fields[-1]
        win: dict[str, Any] = {
            "window_ms": w_ms, "start_ms": start, "count": count, "sum": s, "min": lo,
            "max": hi, "last": last, "last_ts": last_ts, "values": None, "zero_count": 0,
            "pos_offset": 0, "pos_bins": [], "neg_offset": 0, "neg_bins": [],
        }  # fmt: skip
        if version == VERSION:
            win["first"], win["first_ts"], win["increase"], win["resets"] = fields[8:12]
        if mode == 0:
            (k,) = _U32.unpack_from(data, pos)
            pos += _U32.size
            win["values"], pos = _doubles(data, pos, k), pos + 8 * k
        else:
            win["zero_count"], win["pos_offset"], k = _SKETCH_HEAD.unpack_from(data, pos)
            pos += _SKETCH_HEAD.size
            win["pos_bins"], pos = _longs(data, pos, k), pos + 8 * k
            win["neg_offset"], k = _NEG_HEAD.unpack_from(data, pos)
            pos += _NEG_HEAD.size
            win["neg_bins"], pos = _longs(data, pos, k), pos + 8 * k
        windows.append(win)
    if pos != len(data):
        raise CheckpointError(f"{len(data) - pos} trailing bytes in a series state")
    return {"applied_offset": applied, "carry": carry, "carry_ts": carry_ts, "windows": windows}


def restore_record(key: str, data: bytes) -> dict[str, Any]:
    """A changelog record (series key, packed state) as ``PartitionAggregator.restore``
    takes it: the unpacked state plus ``series``, ``name`` and ``labels``."""
    name, labels = parse_series_key(key)
    return {**unpack_series(data), "series": key, "name": name, "labels": labels}


def pack_meta(meta: dict[str, Any]) -> bytes:
    """Bytes of a partition record (``checkpoint_offset``, ``max_event_ms``,
    ``watermark_ms``; ``refused_count`` and ``refused_published`` if the count is not 0).

    >>> m = {"checkpoint_offset": 1, "max_event_ms": 2, "watermark_ms": 3,
    ...      "refused_count": 4, "refused_published": 3}
    >>> unpack_meta(pack_meta(m)) == m
    True
    >>> unpack_meta(pack_meta({**m, "refused_count": 0, "idle_event_ms": 2}))["idle_event_ms"]
    2
    """
    head = _META.pack(
        META_VERSION, meta["checkpoint_offset"], meta["max_event_ms"], meta["watermark_ms"]
    )
    refused = meta.get("refused_count", 0)
    idle = meta.get("idle_event_ms", NO_IDLE)
    if idle != NO_IDLE:
        return head + _REFUSED.pack(refused, meta.get("refused_published", 0)) + _IDLE.pack(idle)
    if not refused:
        return head
    return head + _REFUSED.pack(refused, meta.get("refused_published", 0))


def unpack_meta(data: bytes) -> dict[str, Any]:
    """Inverse of ``pack_meta``."""
    extra = (0, _REFUSED_ALONE.size, _REFUSED.size, _REFUSED.size + _IDLE.size)
    if len(data) - _META.size not in extra:
        raise CheckpointError(f"a partition record of {len(data)} bytes")
    version, offset, max_event, watermark = _META.unpack_from(data)
    if version != META_VERSION:
        raise CheckpointError(f"checkpoint version {version}, this code reads {META_VERSION}")
    meta = {"checkpoint_offset": offset, "max_event_ms": max_event, "watermark_ms": watermark}
    if len(data) >= _META.size + _REFUSED.size:
        meta["refused_count"], meta["refused_published"] = _REFUSED.unpack_from(data, _META.size)
        if len(data) > _META.size + _REFUSED.size:
            meta["idle_event_ms"] = _IDLE.unpack_from(data, _META.size + _REFUSED.size)[0]
    elif len(data) > _META.size:
        meta["refused_count"] = _REFUSED_ALONE.unpack_from(data, _META.size)[0]
    return meta


def _doubles(data: bytes, pos: int, n: int) -> list[float]:
    a = array("d")
    a.frombytes(data[pos : pos + 8 * n])
    return a.tolist()


def _longs(data: bytes, pos: int, n: int) -> list[int]:
    a = array("q")
    a.frombytes(data[pos : pos + 8 * n])
    return a.tolist()
