"""A corrupt or crafted detector checkpoint is refused with a reason, never a huge
allocation: any bytes give either a scorer that scores on, or a ``StateError``; sizes
declared by the bytes are bounded before anything is allocated (``tracemalloc`` peak)."""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import struct
import tracemalloc
from functools import cache
from typing import Any

import pytest
from fixtures.hypothesis_profiles import examples
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoring.anomaly import state as anomaly_state
from monitoring.anomaly.partition import PartitionScorers
from monitoring.anomaly.registry import detector_names
from monitoring.anomaly.river_detectors import HalfSpaceTreesDetector
from monitoring.anomaly.scorer import SeriesScorer
from monitoring.anomaly.state import StateError, pack_pickle
from monitoring.anomaly.windows import FixedWindow

PEAK_BYTES = 32 * 1024 * 1024  # the largest detector a checkpoint may declare is ~5 MB
NAMES = detector_names()
EXPLICIT = ["robust", "zscore"]


@cache
def checkpoint(name: str) -> bytes:
    """A trained scorer's checkpoint."""
    sc = SeriesScorer(name, warmup=5)
    rng = random.Random(3)
    for i in range(400):
        sc.update(60_000 * i, 10 + math.sin(i / 30) + rng.gauss(0, 0.3) + (9 if i == 300 else 0))
    return sc.to_bytes()


def header(name: str) -> bytes:
    """The scorer's bytes before the detector's state."""
    n = len(name.encode())
    return checkpoint(name)[: 2 + n + struct.calcsize("<qqIII")]


def restore_bounded(data: bytes) -> SeriesScorer | None:
    """``from_bytes`` under ``tracemalloc``: the scorer (scored on a few points), or None
    for a clean refusal; the allocation peak is asserted."""
    tracemalloc.start()
    try:
        sc = SeriesScorer.from_bytes(data)
    except StateError as e:
        assert str(e)
        sc = None
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_BYTES, peak
    if sc is not None:
        for i in range(3):
            s = sc.update(10**12 + 60_000 * i, float(i))
            assert 0.0 <= s.score <= 1.0, s
    return sc


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(NAMES), st.binary(max_size=4096))
def test_any_bytes_after_a_header_restore_or_are_refused(name: str, body: bytes) -> None:
    restore_bounded(header(name) + body)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(NAMES), st.data())
def test_a_damaged_checkpoint_restores_or_is_refused(name: str, data: st.DataObject) -> None:
    raw = bytearray(checkpoint(name))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(raw) - 1))
        how = data.draw(st.sampled_from(["flip", "cut", "grow"]))
        if how == "flip":
            raw[at] = data.draw(st.integers(0, 255))
        elif how == "cut":
            del raw[at:]
            if not raw:
                break
        else:
            raw[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    restore_bounded(bytes(raw))


HOSTILE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**62, 10**12, True, None, "600", [1], {"a": 1}]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def explicit_parts(name: str) -> tuple[dict[str, Any], dict[str, int], bytes]:
    state = checkpoint(name)[len(header(name)) :]
    (meta_len,) = struct.unpack_from("<I", state, 1)
    meta = json.loads(state[5 : 5 + meta_len])
    return meta["s"], meta["a"], state[5 + meta_len :]


def explicit(scalars: dict[str, Any], arrays: dict[str, Any], body: bytes) -> bytes:
    meta = json.dumps({"s": scalars, "a": arrays}).encode()
    return struct.pack("<BI", 1, len(meta)) + meta + body


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(EXPLICIT), st.data())
def test_hostile_scalars_and_sizes_restore_or_are_refused(name: str, data: st.DataObject) -> None:
    scalars, arrays, body = explicit_parts(name)
    scalars, arrays = dict(scalars), dict(arrays)
    for _ in range(data.draw(st.integers(1, 3))):
        if data.draw(st.booleans()):
            key = data.draw(st.sampled_from(sorted(scalars)))
            scalars[key] = data.draw(HOSTILE)
        else:
            key = data.draw(st.sampled_from(sorted(arrays)))
            arrays[key] = data.draw(HOSTILE)
    restore_bounded(header(name) + explicit(scalars, arrays, body))


@pytest.mark.parametrize("size", [10**9, 2**40])
def test_a_declared_window_of_any_size_is_refused_before_allocating(size: int) -> None:
    for name in EXPLICIT:
        scalars, arrays, body = explicit_parts(name)
        assert (
            restore_bounded(header(name) + explicit({**scalars, "window": size}, arrays, body))
            is None
        )
    scalars, arrays, body = explicit_parts("robust")
    for key in ("buckets", "record", "recur_days", "recur_tol", "daily_tol"):
        bad = explicit({**scalars, key: size}, arrays, body)
        assert restore_bounded(header("robust") + bad) is None, key
    big = explicit(scalars, {**arrays, "values": size}, body)  # more doubles than bytes
    assert restore_bounded(header("robust") + big) is None


class _Reduce:
    """Pickles as ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


def crafted_pickles() -> list[tuple[str, bytes]]:
    from river.anomaly import HalfSpaceTrees

    from monitoring.anomaly.windows import RollingWindow

    prefix = bytes([2, 1])
    return [
        ("a 2 GiB bytes length", prefix + b"B" + (2**31 - 1).to_bytes(4, "little")),
        ("an 8 GiB frame", prefix + b"\x80\x05\x95" + (2**33).to_bytes(8, "little")),
        ("a huge bytearray8", prefix + b"\x96" + (2**40).to_bytes(8, "little")),
        ("a huge tree", prefix + pickle.dumps(_Reduce(HalfSpaceTrees, 10, 60), protocol=5)),
        ("a huge window", prefix + pickle.dumps(_Reduce(FixedWindow, 10**10), protocol=5)),
        ("a rolling window", prefix + pickle.dumps(_Reduce(RollingWindow, 10**10), protocol=5)),
        ("os.system", prefix + pickle.dumps(_Reduce(os.system, "false"), protocol=5)),
        ("getattr of a dunder", prefix + pickle.dumps(
            _Reduce(getattr, random.Random, "__init__"), protocol=5)),
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["hst", "drift", "forecast", "ensemble"])
def test_crafted_pickles_are_refused_without_allocating(name: str) -> None:
    for what, state in crafted_pickles():
        assert restore_bounded(header(name) + state) is None, what


@pytest.mark.parametrize("name", NAMES)
def test_a_good_checkpoint_still_restores_exactly(name: str) -> None:
    sc = restore_bounded(checkpoint(name))
    assert sc is not None
    fresh = SeriesScorer.from_bytes(checkpoint(name))
    assert fresh.to_bytes() == checkpoint(name)


def test_the_partition_counts_a_refused_record_with_its_reason() -> None:
    part = PartitionScorers(lambda _: SeriesScorer(), idle_ms=60_000)
    head = struct.pack("<qq", 7, 1_000)
    scalars, arrays, body = explicit_parts("robust")
    bad = header("robust") + explicit({**scalars, "window": 10**12}, arrays, body)
    part.restore({"good": head + checkpoint("robust"), "bad": head + bad})
    assert len(part) == 1 and part.undecodable == 1
    assert part.refused == [("bad", part.refused[0][1])]
    assert "window 1000000000000" in part.refused[0][1]


def test_pack_pickle_bytes_of_a_foreign_class_are_refused() -> None:
    state = pack_pickle(random.Random(1))
    assert restore_bounded(header("hst") + state) is None


class _Call:
    """Pickles as ``f(*args)`` (a REDUCE): to build a hostile pickle."""

    def __init__(self, f: Any, *args: Any) -> None:
        self.f, self.args = f, args

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (self.f, self.args)

    def __call__(self, *args: Any) -> Any:  # pickle wants a callable first item
        raise NotImplementedError


def test_a_pickle_cannot_reach_the_builtins_through_a_river_class() -> None:
    """A River class our pickles never name, a method returning a generator, its frame's
    globals, their builtins, ``exec``: refused before anything runs."""
    import builtins

    from river.tree.nodes.branch import NumericBinaryBranch

    gen = _Call(_Call(getattr, _Call(NumericBinaryBranch), "iter_dfs"))
    globals_ = _Call(getattr, _Call(getattr, gen, "gi_frame"), "f_globals")
    builtins_ = _Call(_Call(getattr, globals_, "get"), "__builtins__")
    exec_ = _Call(_Call(getattr, builtins_, "get"), "exec")
    payload = _Call(exec_, "import builtins; builtins._checkpoint_pwned = 1")
    kind = bytes([anomaly_state.KIND_PICKLE, anomaly_state.PICKLE_VERSION])
    data = kind + pickle.dumps(payload, protocol=4)
    with pytest.raises(StateError):
        anomaly_state.unpack_pickle(data, HalfSpaceTreesDetector)
    assert not hasattr(builtins, "_checkpoint_pwned")


def test_getattr_in_a_pickle_reaches_page_hinkleys_test_method_only() -> None:
    from river.drift.page_hinkley import PageHinkley

    ph = PageHinkley()
    assert anomaly_state._getattr(ph, "_test_both") == ph._test_both
    for obj, name in [(ph, "update"), (ph, "__class__"), (HalfSpaceTreesDetector(), "to_state")]:
        with pytest.raises(pickle.UnpicklingError):
            anomaly_state._getattr(obj, name)


def test_a_detector_larger_than_the_configured_one_is_refused() -> None:
    """A record a few hundred bytes long may declare the largest windows (bounded, but
    times every series of a partition): over the configured detector's, refused."""
    from monitoring.anomaly.partition import _HEAD

    big = SeriesScorer("robust", options={"window": 100_000, "record": 100_000})
    usual = SeriesScorer("robust")
    table = {
        "big": _HEAD.pack(1, 0) + big.to_bytes(),
        "usual": _HEAD.pack(1, 0) + usual.to_bytes(),
    }
    part = PartitionScorers(lambda key: SeriesScorer("robust"), idle_ms=60_000)
    part.restore(table)
    assert len(part) == 1 and part.undecodable == 1
    assert part.refused[0][0] == "big" and "over the configured" in part.refused[0][1]
    larger = PartitionScorers(  # configured larger than the record: restored
        lambda key: SeriesScorer("robust", options={"window": 100_000, "record": 100_000}),
        idle_ms=60_000,
    )
    larger.restore(table)
    assert len(larger) == 2
