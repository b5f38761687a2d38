"""Prometheus-style instruments of the producer SDK.

Counter, gauge and histogram families hold one child per label set, like
prometheus_client's labelled metrics; ``Instruments`` registers the families and
snapshots every series for ``MetricsCollector.collect()``.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prometheus_client.utils import floatToGoString

from monitoring.metrics.samples import InvalidSample
from monitoring.wire.sample_encoding import SeriesRef, make_series

DEFAULT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    math.inf,
)


def _labels_key(labels: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in labels.items()))


class _Family:
    """A metric family: children by label set, like prometheus_client's labelled metrics."""

    kind = "GAUGE"

    def __init__(
        self, owner: Instruments, name: str, labels: Mapping[str, Any] | None, unit: str
    ) -> None:
        self._owner = owner
        self.name = name
        self.unit = unit
        self.const_labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self._children: dict[tuple[tuple[str, str], ...], Any] = {}
        self._lock = threading.Lock()
        make_series(name, self.const_labels, self.kind, unit)  # validate early

    def labels(self, **labels: Any) -> Any:
        """The child for these labels (merged over the family's constant labels)."""
        return self._child(labels)

    def _child(self, labels: Mapping[str, Any] | None) -> Any:
        key = _labels_key(labels) if labels else ()
        child = self._children.get(key)
        if child is None:
            with self._lock:
                child = self._children.get(key)
                if child is None:
                    child = self._children[key] = self._new_child(
                        {**self.const_labels, **dict(key)}
                    )
        return child

    def _new_child(self, labels: dict[str, str]) -> Any:
        raise NotImplementedError

    def samples(self) -> list[tuple[SeriesRef, float]]:
        out: list[tuple[SeriesRef, float]] = []
        for child in list(self._children.values()):
            out.extend(child.samples())
        return out


class _ValueChild:
    __slots__ = ("_lock", "_owner", "series", "value")

    def __init__(self, owner: Instruments, series: SeriesRef) -> None:
        self._owner = owner
        self.series = series
        self.value = 0.0
        self._lock = threading.Lock()

    def samples(self) -> list[tuple[SeriesRef, float]]:
        return [(self.series, self.value)]


class CounterChild(_ValueChild):
    """One counter series: monotonically increasing."""

    __slots__ = ()

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (>= 0)."""
        if amount < 0:
            raise ValueError(f"counter {self.series.key} can only increase, got inc({amount})")
        with self._lock:
            self.value += amount
        self._owner.dirty = True


class GaugeChild(_ValueChild):
    """One gauge series: a value that goes up and down."""

    __slots__ = ()

    def set(self, value: float) -> None:
        self.value = float(value)
        self._owner.dirty = True

    def inc(self, amount: float = 1.0) -> None:
        with self._lock:
            self.value += amount
        self._owner.dirty = True

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)


class HistogramChild:
    """One histogram: cumulative ``_bucket{le}`` counts, ``_sum`` and ``_count``."""

    __slots__ = (
        "_bucket_series",
        "_count",
        "_count_series",
        "_counts",
        "_lock",
        "_owner",
        "_sum",
        "_sum_series",
        "_upper",
    )

    def __init__(
        self,
        owner: Instruments,
        name: str,
        labels: dict[str, str],
        buckets: Sequence[float],
        unit: str,
    ) -> None:
        self._owner = owner
        self._upper = list(buckets)
        self._counts = [0] * len(self._upper)
        self._sum = 0.0
        self._count = 0
        self._lock = threading.Lock()
        self._bucket_series = [
            make_series(
                f"{name}_bucket", {**labels, "le": floatToGoString(b)}, "HISTOGRAM_BUCKET", unit
            )
            for b in self._upper
        ]
        self._sum_series = make_series(f"{name}_sum", labels, "COUNTER", unit)
        self._count_series = make_series(f"{name}_count", labels, "COUNTER", "")

    def observe(self, value: float) -> None:
        """Count one observation in the first bucket whose upper bound is >= value."""
        i = bisect.bisect_left(self._upper, value)
        with self._lock:
            self._counts[i] += 1
            self._sum += value
            self._count += 1
        self._owner.dirty = True

    def samples(self) -> list[tuple[SeriesRef, float]]:
        with self._lock:
            counts, total, n = list(self._counts), self._sum, self._count
        out: list[tuple[SeriesRef, float]] = []
        acc = 0
        for s, c in zip(self._bucket_series, counts, strict=True):
            acc += c
            out.append((s, float(acc)))
        out.append((self._sum_series, total))
        out.append((self._count_series, float(n)))
        return out


class Counter(_Family):
    """A counter family; ``counter.inc()`` or ``counter.labels(route="/").inc()``."""

    kind = "COUNTER"

    def _new_child(self, labels: dict[str, str]) -> CounterChild:
        return CounterChild(self._owner, make_series(self.name, labels, self.kind, self.unit))

    def inc(
        self, amount: float = 1.0, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        """Add ``amount`` to the series of ``labels`` (a mapping or keywords)."""
        self._child({**(labels or {}), **label_kw}).inc(amount)


class Gauge(_Family):
    """A gauge family; ``.set(v)``, ``.inc()``, ``.dec()``, or through ``.labels(...)``."""

    kind = "GAUGE"

    def _new_child(self, labels: dict[str, str]) -> GaugeChild:
        return GaugeChild(self._owner, make_series(self.name, labels, self.kind, self.unit))

    def set(self, value: float, labels: Mapping[str, Any] | None = None, **label_kw: Any) -> None:
        self._child({**(labels or {}), **label_kw}).set(value)

    def inc(
        self, amount: float = 1.0, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        self._child({**(labels or {}), **label_kw}).inc(amount)

    def dec(
        self, amount: float = 1.0, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        self._child({**(labels or {}), **label_kw}).dec(amount)


class Histogram(_Family):
    """A histogram family emitting Prometheus ``_bucket{le}``, ``_sum``, ``_count``."""

    kind = "HISTOGRAM_BUCKET"

    def __init__(
        self,
        owner: Instruments,
        name: str,
        labels: Mapping[str, Any] | None,
        unit: str,
        buckets: Sequence[float],
    ) -> None:
        bounds = sorted(float(b) for b in buckets)
        if not bounds or len(set(bounds)) != len(bounds):
            raise ValueError(f"histogram {name}: buckets must be distinct and non-empty")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self.buckets = tuple(bounds)
        super().__init__(owner, name, labels, unit)

    def _new_child(self, labels: dict[str, str]) -> HistogramChild:
        if "le" in labels:
            raise InvalidSample("bad-label-name", f"histogram {self.name} cannot have a label 'le'")
        return HistogramChild(self._owner, self.name, labels, self.buckets, self.unit)

    def observe(
        self, value: float, labels: Mapping[str, Any] | None = None, **label_kw: Any
    ) -> None:
        self._child({**(labels or {}), **label_kw}).observe(value)


class Instruments:
    """The registered families; ``dirty`` is set by any update since the last collect."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        self.lock = threading.Lock()
        self.dirty = False

    def get_or_create(self, cls: type[_Family], name: str, factory: Callable[[], _Family]) -> Any:
        with self.lock:
            fam = self.families.get(name)
            if fam is None:
                fam = self.families[name] = factory()
            elif type(fam) is not cls:
                raise ValueError(f"metric {name} is already a {type(fam).__name__.lower()}")
            return fam

    def snapshot(self, reset: bool = False) -> list[tuple[SeriesRef, float]]:
        with self.lock:
            fams = list(self.families.values())
        if reset:
            self.dirty = False
        out: list[tuple[SeriesRef, float]] = []
        for f in fams:
            out.extend(f.samples())
        return out
