"""The engine's interface values: matchers, series, sources, results and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

STALE_NAN_BITS = 0x7FF0000000000002
"""Prometheus's staleness marker: a NaN with this exact bit pattern ends a series."""

Labels = tuple[tuple[str, str], ...]
"""A label set as sorted ``(name, value)`` pairs (hashable, ordered like Prometheus)."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector; regexes are anchored, as in Prometheus."""

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str


@dataclass(frozen=True)
class SeriesData:
    """One series' samples, sorted by time, without duplicate timestamps."""

    labels: dict[str, str]
    t_ms: np.ndarray
    values: np.ndarray


class Source(Protocol):
    """Where samples come from (ClickHouse in production, a list in tests).

    Optional extension: a source whose ``select`` also takes a keyword ``hint``
    (``monitoring.promql.hints.SelectHint`` or None, default None) is told when and how
    far back each selector is evaluated, and may leave out the samples
    ``hint.keep`` rejects; the engine passes it only to a source that takes it.
    """

    def select(self, matchers: list[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Every series matching ALL matchers, with its samples in ``[start_ms, end_ms]``."""
        ...


@dataclass(frozen=True)
class Result:
    """A query's answer: an instant vector has one point per series."""

    type: Literal["vector", "matrix", "scalar", "string"]
    series: list[tuple[dict[str, str], np.ndarray, np.ndarray]] = field(default_factory=list)
    scalar: tuple[int, float] | None = None
    warnings: tuple[str, ...] = ()
    string: tuple[int, str] | None = None
    """For ``type == "string"``: the evaluation time and the string (added field)."""


class PromQLError(Exception):
    """A query failed; ``error_type`` is Prometheus's API ``errorType``."""

    error_type = "execution"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadQuery(PromQLError):
    """The query does not parse or type-check (``bad_data``); ``position`` is a 0-based
    character offset into the query when known."""

    error_type = "bad_data"

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class QueryTimeout(PromQLError):
    """The evaluation ran past the engine's ``timeout_s``."""

    error_type = "timeout"


class TooLarge(PromQLError):
    """A limit was hit (series, points per series, samples) before memory was spent.

    ``error_type`` is ``execution``, except for the points-per-series check of a range
    query, which Prometheus's API answers with ``bad_data``.
    """

    def __init__(self, message: str, error_type: str = "execution") -> None:
        super().__init__(message)
        self.error_type = error_type


class EvalError(PromQLError):
    """An evaluation error Prometheus reports as ``execution`` (e.g. many-to-many)."""


def is_stale(values: np.ndarray) -> np.ndarray:
    """Which values are staleness markers (bitwise, not any NaN)."""
    return np.asarray(values, dtype=np.float64).view(np.uint64) == STALE_NAN_BITS


def labels_key(labels: dict[str, str]) -> Labels:
    """A label dict as a sorted tuple; empty values are dropped, as Prometheus does."""
    return tuple(sorted((k, v) for k, v in labels.items() if v != ""))
