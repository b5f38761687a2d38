"""Checkpoint bytes of a detector's state (internal, versioned; never a wire format).

The hand-written detectors keep their state in scalars and ``array('d')`` buffers and
write it explicitly, so a checkpoint is exact (floats as IEEE-754 doubles) and does not
depend on Python object layout. Layout, little-endian:

    u8 kind=1, u32 meta_len, meta (UTF-8 JSON: {"s": scalars, "a": {name: n}}),
    then the arrays' doubles in the order of "a"

The River-based detectors (:mod:`monitoring.anomaly.river_detectors`) hold River
objects, which have no public state API: they are pickled (:func:`pack_pickle`, kind
byte 2 plus a version byte), for a worker's own private checkpoints only. Reading one
(:func:`unpack_pickle`) first walks its opcodes with ``pickletools.genops``, which
checks every declared length against the bytes present (CPython's unpickler allocates
a declared length before it reads: a 5-byte record could ask for 2 GiB) and every memo
index against the memo so far (CPython sizes its memo by the index), and refuses the
opcodes our pickles never hold (persistent ids, extension codes, ``INST``/``OBJ``);
then unpickles with only the globals our detectors' pickles use (an exact list of
classes: any other method could hand a pickle a generator, and its frame the builtins),
``getattr`` only of PageHinkley's test method, and River's Python classes never ``__init__``-ed by
the pickle (their state arrives by ``BUILD``), so a crafted record cannot construct a
detector of any size it likes. River's Rust ADWIN is still built from the pickled
arguments and its own serialised state (``river._river_rust``): a worker's checkpoints
are trusted that far.

A checkpoint is read as hostile input (a corrupt or crafted record on the state topic):
every size in it is checked against the bytes present before anything is allocated,
and :func:`whole` and :func:`number` check each scalar's type and range, so a bad
state is a :class:`StateError` with the reason, never a huge allocation.

>>> from array import array
>>> blob = pack_explicit({"n": 3, "mean": 0.5}, {"w": array("d", [1.0, 2.5])})
>>> scalars, arrays = unpack_explicit(blob)
>>> scalars["n"], scalars["mean"], list(arrays["w"])
(3, 0.5, [1.0, 2.5])
"""

from __future__ import annotations

import io
import json
import math
import pickle
import pickletools
import struct
from array import array
from collections.abc import Callable
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
    """Inverse of :func:`pack_explicit`; ``StateError`` for anything else (each array
    must fit in the bytes present)."""
    if len(data) < _HEAD.size or data[0] != KIND_EXPLICIT:
        raise StateError(f"not an explicit detector state (kind byte {data[:1]!r})")
    _, meta_len = _HEAD.unpack_from(data)
    pos = _HEAD.size + meta_len
    if pos > len(data):
        raise StateError(f"detector state metadata of {meta_len} bytes in {len(data)}")
    try:
        meta = json.loads(data[_HEAD.size : pos])
    except (ValueError, RecursionError) as exc:
        raise StateError(f"corrupt detector state metadata: {exc!r}"[:300]) from None
    if not (
        isinstance(meta, dict)
        and isinstance(meta.get("s"), dict)
        and isinstance(meta.get("a"), dict)
    ):
        raise StateError("detector state metadata is not {'s': {...}, 'a': {...}}")
    arrays: dict[str, array] = {}
    for name, n in meta["a"].items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise StateError(f"detector state array {name!r} has length {n!r}"[:300])
        end = pos + 8 * n
        if end > len(data):
            raise StateError(f"detector state truncated in array {name!r}")
        arrays[name] = array("d", data[pos:end])
        pos = end
    if pos != len(data):
        raise StateError(f"detector state has {len(data) - pos} trailing bytes")
    return meta["s"], arrays


_MISSING: Any = object()


def whole(s: dict[str, Any], key: str, lo: int, hi: int, default: Any = _MISSING) -> int:
    """Scalar ``key`` of a state: a whole number in ``[lo, hi]`` (``default`` if absent
    and given), else ``StateError``.

    >>> whole({"window": 600}, "window", 1, 1000)
    600
    >>> try:
    ...     whole({"window": 10**12}, "window", 1, 1000)
    ... except StateError as e:
    ...     print(e)
    detector state: window 1000000000000 is not a whole number in [1, 1000]
    """
    v = s.get(key, default)
    if v is _MISSING:
        raise StateError(f"detector state: {key} missing")
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise StateError(f"detector state: {key} {v!r} is not a whole number in [{lo}, {hi}]"[:300])
    return v


def values_within(a: array, name: str, limit: float, nan: bool = False) -> array:
    """``a`` if every value is within ``±limit`` (NaN too when ``nan``), else
    ``StateError`` (a window of values the scorer could never have fed it)."""
    for v in a:
        if not -limit <= v <= limit and not (nan and v != v):
            raise StateError(f"detector state: {name} holds {v!r}, beyond ±{limit:g}")
    return a


def number(
    s: dict[str, Any],
    key: str,
    default: Any = _MISSING,
    lo: float | None = None,
    hi: float | None = None,
) -> float:
    """Scalar ``key`` of a state: a number (``default`` if absent and given), in
    ``[lo, hi]`` when either is given (NaN then refused), else ``StateError``."""
    v = s.get(key, default)
    if v is _MISSING:
        raise StateError(f"detector state: {key} missing")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise StateError(f"detector state: {key} {v!r} is not a number"[:300])
    if (lo is not None or hi is not None) and not (
        (-math.inf if lo is None else lo) <= v <= (math.inf if hi is None else hi)
    ):
        raise StateError(f"detector state: {key} {v!r} is not in [{lo}, {hi}]"[:300])
    return v


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


_GLOBALS = {  # what our detectors' pickles name (besides River's and our own classes)
    ("array", "_array_reconstructor"), ("array", "array"), ("builtins", "tuple"),
    ("collections", "defaultdict"), ("collections", "deque"), ("functools", "partial"),
    ("random", "Random"),
}  # fmt: skip
# the classes our detectors' pickles name, exactly: a prefix rule (any class of River
# or of this package) let a pickle reach a method returning a generator, and from its
# frame the builtins
_CLASSES = {
    ("monitoring.anomaly.detectors", "Likelihood"),
    ("monitoring.anomaly.detectors", "RobustEnsemble"),
    ("monitoring.anomaly.river_detectors", "Calibrator"),
    ("monitoring.anomaly.river_detectors", "DriftDetector"),
    ("monitoring.anomaly.river_detectors", "ForecastResidual"),
    ("monitoring.anomaly.river_detectors", "HalfSpaceTreesDetector"),
    ("monitoring.anomaly.river_detectors", "MaxEnsemble"),
    ("monitoring.anomaly.river_detectors", "_Scaled"),
    ("monitoring.anomaly.windows", "FixedWindow"),
    ("monitoring.anomaly.windows", "Ring"),
    ("monitoring.anomaly.windows", "RollingWindow"),
    ("river._river_rust.drift", "AdaptiveWindowing"),
    ("river.anomaly.hst", "HalfSpaceTrees"),
    ("river.drift.adwin", "ADWIN"),
    ("river.drift.page_hinkley", "PageHinkley"),
    ("river.stats.mean", "Mean"),
    ("river.time_series.holt_winters", "AdditiveLevel"),
    ("river.time_series.holt_winters", "HoltWinters"),
    ("river.time_series.holt_winters", "Trend"),
    ("river.tree.padded", "PaddedBranch"),
    ("river.tree.padded", "PaddedLeaf"),
}
# the one attribute our pickles fetch with getattr: PageHinkley's bound test method
_ATTRIBUTES = {("PageHinkley", "_test_both"), ("PageHinkley", "_test_increase"),
               ("PageHinkley", "_test_decrease")}  # fmt: skip
_REFUSED_OPS = {"PERSID", "BINPERSID", "EXT1", "EXT2", "EXT4", "INST", "OBJ"}
# memo opcodes with an index: a PUT may add the next entry (0), a GET must name one (1)
_MEMO_OPS = {"PUT": 0, "BINPUT": 0, "LONG_BINPUT": 0, "GET": 1, "BINGET": 1, "LONG_BINGET": 1}


def _getattr(obj: object, name: str) -> Any:
    """``getattr`` as our pickles use it: PageHinkley's test method, nothing else."""
    from river.drift.page_hinkley import PageHinkley

    if type(obj) is not PageHinkley or (type(obj).__name__, name) not in _ATTRIBUTES:
        raise pickle.UnpicklingError(f"getattr of {name!r} on a {type(obj).__name__} refused")
    return getattr(obj, name)


_UNINIT: dict[type, type] = {}


def _uninitialised(cls: type) -> type:
    """A stand-in for ``cls`` whose call makes a ``cls`` without running ``__init__``
    (a pickle's ``NEWOBJ`` does the same; its ``REDUCE`` would run it with any
    arguments)."""
    proxy = _UNINIT.get(cls)
    if proxy is None:

        def new(_proxy: type, *_args: Any, **_kwargs: Any) -> Any:
            return object.__new__(cls)

        proxy = _UNINIT[cls] = type(cls.__name__, (), {"__new__": new})
    return proxy


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "getattr"):
            return _getattr
        if (module, name) in _GLOBALS:
            return super().find_class(module, name)
        if (module, name) in _CLASSES:
            found = super().find_class(module, name)
            if isinstance(found, type):
                # a Python class (its __new__ object's): made without __init__
                return _uninitialised(found) if found.__new__ is object.__new__ else found
        raise pickle.UnpicklingError(f"{module}.{name} is not in a detector state")


def _check_opcodes(body: bytes) -> None:
    """Every declared length within the bytes present, every memo index at most one past
    the memo (CPython sizes its memo by the index), no opcode we never write."""
    memo = 0
    try:
        for op, arg, _ in pickletools.genops(body):
            name = op.name
            if name == "MEMOIZE":
                memo += 1
            elif name in _MEMO_OPS:
                if not isinstance(arg, int) or not 0 <= arg <= memo - _MEMO_OPS[name]:
                    raise StateError(f"pickled detector state: {name} {arg!r} past the memo")
                memo = max(memo, arg + 1)
            elif name in _REFUSED_OPS:
                raise StateError(f"pickled detector state holds opcode {name}")
    except StateError:
        raise
    except Exception as exc:  # genops: ValueError for lengths past the end, and others
        raise StateError(f"corrupt pickled detector state: {exc!r}"[:300]) from None


def unpack_pickle(data: bytes, expected: type[T], trial: Callable[[T], object] | None = None) -> T:
    """Inverse of :func:`pack_pickle`; the object must be an ``expected`` (the module
    docstring says what is checked before and while unpickling), and ``trial`` of a
    second copy must not raise (a corrupt record can name an attribute wrong)."""
    if len(data) < 2 or data[0] != KIND_PICKLE:
        raise StateError(f"not a pickled detector state (kind byte {data[:1]!r})")
    if data[1] != PICKLE_VERSION:
        raise StateError(f"pickled detector state version {data[1]}, expected {PICKLE_VERSION}")
    _check_opcodes(data[2:])
    what = "corrupt pickled detector state"
    try:
        obj = _Unpickler(io.BytesIO(data[2:])).load()  # own checkpoints only (docstring)
        if not isinstance(obj, expected):
            what = "pickled detector state"
            raise TypeError(f"holds a {type(obj).__name__}, not {expected.__name__}")
        if trial is not None:
            what = f"restored {expected.__name__} does not run"
            trial(_Unpickler(io.BytesIO(data[2:])).load())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # River's Rust state panics (a BaseException) on bad bytes
        raise StateError(f"{what}: {exc!r}"[:300]) from None
    return obj
