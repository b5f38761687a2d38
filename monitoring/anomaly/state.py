"""Checkpoint bytes of a detector's state (internal, versioned; never a wire format).

The hand-written detectors keep their state in scalars and ``array('d')`` buffers and
write it explicitly, so a checkpoint is exact (floats as IEEE-754 doubles) and does not
depend on Python object layout. Layout, little-endian:

    u8 kind=1, u32 meta_len, meta (UTF-8 JSON: {"s": scalars, "a": {name: n}}),
    then the arrays' doubles in the order of "a"

The River-based detectors (:mod:`monitoring.anomaly.river_detectors`) hold River
objects, which have no public state API: they are pickled (:func:`pack_pickle`, kind
byte 2 plus a version byte), for a worker's own private checkpoints only.

>>> from array import array
>>> blob = pack_explicit({"n": 3, "mean": 0.5}, {"w": array("d", [1.0, 2.5])})
>>> scalars, arrays = unpack_explicit(blob)
>>> scalars["n"], scalars["mean"], list(arrays["w"])
(3, 0.5, [1.0, 2.5])
"""

from __future__ import annotations

import json
import pickle
import struct
from array import array
from typing import Any, TypeVar

KIND_EXPLICIT = 1
_HEAD = struct.Struct("<BI")
T = TypeVar("T")


class StateError(ValueError):
    """Checkpoint bytes this version cannot read."""


def pack_explicit(scalars: dict[str, Any], arrays: dict[str, array]) -> bytes:
    """Bytes of JSON-able scalars plus named double arrays."""
    meta = json.dumps({"s": scalars, "a": {k: len(v) for k, v in arrays.items()}}).encode()
    parts = [_HEAD.pack(KIND_EXPLICIT, len(meta)), meta]
    parts.extend(v.tobytes() for v in arrays.values())
    return b"".join(parts)


def unpack_explicit(data: bytes) -> tuple[dict[str, Any], dict[str, array]]:
    """Inverse of :func:`pack_explicit`."""
    if len(data) < _HEAD.size or data[0] != KIND_EXPLICIT:
        raise StateError(f"not an explicit detector state (kind byte {data[:1]!r})")
    _, meta_len = _HEAD.unpack_from(data)
    pos = _HEAD.size + meta_len
    try:
        meta = json.loads(data[_HEAD.size : pos])
    except ValueError as exc:
        raise StateError(f"corrupt detector state metadata: {exc}") from exc
    arrays: dict[str, array] = {}
    for name, n in meta["a"].items():
        end = pos + 8 * n
        if end > len(data):
            raise StateError(f"detector state truncated in array {name!r}")
        arrays[name] = array("d", data[pos:end])
        pos = end
    if pos != len(data):
        raise StateError(f"detector state has {len(data) - pos} trailing bytes")
    return meta["s"], arrays


KIND_PICKLE = 2
PICKLE_VERSION = 1


def pack_pickle(obj: object) -> bytes:
    """Bytes of a pickled object: ``u8 kind=2, u8 version=1``, then the pickle.

    For detectors built on River objects, which have no public state API. These
    bytes are a worker's own private checkpoint (written and read by the same
    code); never unpickle bytes that come from anywhere else. The object is pickled,
    restored and pickled again: the first pickle of a live object can differ from
    that of its restored copy (which objects share references), the second cannot,
    so a restored state checkpoints to the same bytes.
    """
    once = pickle.dumps(obj, protocol=5)
    twice = pickle.dumps(pickle.loads(once), protocol=5)  # our own bytes
    return bytes([KIND_PICKLE, PICKLE_VERSION]) + twice


def unpack_pickle(data: bytes, expected: type[T]) -> T:
    """Inverse of :func:`pack_pickle`; the object must be an ``expected``."""
    if len(data) < 2 or data[0] != KIND_PICKLE:
        raise StateError(f"not a pickled detector state (kind byte {data[:1]!r})")
    if data[1] != PICKLE_VERSION:
        raise StateError(f"pickled detector state version {data[1]}, expected {PICKLE_VERSION}")
    try:
        obj = pickle.loads(data[2:])  # own checkpoints only (docstring)
    except Exception as exc:
        raise StateError(f"corrupt pickled detector state: {exc}") from exc
    if not isinstance(obj, expected):
        raise StateError(f"pickled state holds a {type(obj).__name__}, not {expected.__name__}")
    return obj
