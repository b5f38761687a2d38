"""Checkpoint bytes of the model monitor (internal, versioned; never a wire format).

Layout: one kind byte, then the body.

- kind 1 (JSON): UTF-8 JSON, for the partition's offsets, clock and counts.
- kind 2 (pickle): the River objects of one series (rolling metrics, drift detectors).
  River keeps their state in its own classes with no public state API, so pickle is
  the only exact capture. It is used only for the changelog a worker writes and reads
  itself (same code version), never between parties or on the wire; an unknown kind
  is a :class:`StateError`.

>>> unpack_json(pack_json({"clock_ms": 5}))
{'clock_ms': 5}
"""

from __future__ import annotations

import json
import pickle
from typing import Any

KIND_JSON = 1
KIND_PICKLE = 2


class StateError(ValueError):
    """Checkpoint bytes this version cannot read."""


def pack_json(obj: Any) -> bytes:
    return bytes([KIND_JSON]) + json.dumps(obj, separators=(",", ":")).encode()


def unpack_json(data: bytes) -> Any:
    if not data or data[0] != KIND_JSON:
        raise StateError(f"not a JSON model monitor state (kind byte {data[:1]!r})")
    return json.loads(data[1:])


def pack_pickle(obj: object) -> bytes:
    return bytes([KIND_PICKLE]) + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_pickle(data: bytes) -> Any:
    if not data or data[0] != KIND_PICKLE:
        raise StateError(f"not a pickled model monitor state (kind byte {data[:1]!r})")
    return pickle.loads(data[1:])
