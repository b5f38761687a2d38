"""Prometheus HTTP API conventions, as Prometheus 2.42 parses and prints them (pure).

Times are RFC 3339 or Unix seconds (a float, rounded to the millisecond); durations
are seconds (a float) or Prometheus durations (``1h30m``); values print as Go's
``strconv.FormatFloat(v, 'f', -1, 64)`` (``"1"``, ``"0.5"``, ``"NaN"``, ``"+Inf"``);
timestamps as seconds with up to three decimals.

>>> parse_time("1700000000.5", "time"), parse_time("2023-11-14T22:13:20.5Z", "time")
(1700000000500, 1700000000500)
>>> parse_duration("1m30s", "step"), parse_duration("15", "step")
(90000, 15000)
>>> [format_value(v) for v in (1.0, 0.25, 1e21, float("nan"), float("-inf"))]
['1', '0.25', '1000000000000000000000', 'NaN', '-Inf']
>>> format_ts(1700000000500), format_ts(1700000000000)
('1700000000.5', '1700000000')
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import orjson

from monitoring.metrics.prom_syntax import format_value, prom_duration_ms

# Prometheus's minTime/maxTime, the defaults of series and labels' start and end.
MIN_TIME_MS = (-9_223_372_036_854_775 + 62_135_596_801) * 1000
MAX_TIME_MS = (9_223_372_036_854_775 - 62_135_596_801) * 1000 + 999
_MIN_TIME_TEXT = "-292273086-05-16T16:47:06Z"
_MAX_TIME_TEXT = "292277025-08-18T07:12:54.999999999Z"
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$",
    re.ASCII,
)


class BadParam(ValueError):
    """A request parameter Prometheus would refuse (``bad_data``)."""


def go_float(text: str) -> float | None:
    """``text`` as Go's ``strconv.ParseFloat`` reads it: ASCII only, no surrounding
    space (Python's ``float`` takes both); "1_000" and "inf" as both read them."""
    if not text.isascii() or text != text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_time(text: str, name: str) -> int:
    """Milliseconds since the epoch of ``text`` (Unix seconds or RFC 3339)."""
    seconds = go_float(text)
    if seconds is not None and math.isfinite(seconds):
        whole = math.trunc(seconds)
        return whole * 1000 + round((seconds - whole) * 1000)
    m = _RFC3339.match(text)
    if m:
        y, mo, d, h, mi, s, frac, zone = m.groups()
        tz = dt.UTC if zone in ("Z", "z") else dt.datetime.strptime(zone, "%z").tzinfo
        try:
            when = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), tzinfo=tz)
        except ValueError:
            when = None
        if when is not None:
            ms = int((frac or ".0")[1:4].ljust(3, "0"))
            return int(when.timestamp()) * 1000 + ms
    if text == _MIN_TIME_TEXT:
        return MIN_TIME_MS
    if text == _MAX_TIME_TEXT:
        return MAX_TIME_MS
    raise BadParam(
        f'invalid parameter "{name}": cannot parse {go_quote(text)} to a valid timestamp'
    )


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
               "\t": "\\t", "\v": "\\v", "\\": "\\\\", '"': '\\"'}  # fmt: skip


def go_quote(text: str) -> str:
    r"""``text`` as Go's ``%q`` prints it in Prometheus's error messages.

    >>> go_quote('5\n')
    '"5\\n"'
    """
    out = []
    for ch in text:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def parse_duration(text: str, name: str) -> int:
    """Milliseconds of ``text`` (seconds as a float, or a Prometheus duration)."""
    seconds = go_float(text)
    if seconds is not None:
        if not math.isfinite(seconds) or abs(seconds) * 1e9 > 2**63:
            raise BadParam(
                f'invalid parameter "{name}": cannot parse {go_quote(text)} to a valid duration. '
                "It overflows int64"
            )
        return round(seconds * 1000)
    ms = prom_duration_ms(text)
    if ms is not None and ms * 1_000_000 > 2**63:  # past int64 nanoseconds, as Prometheus
        raise BadParam(
            f'invalid parameter "{name}": cannot parse {go_quote(text)} to a valid duration. '
            "It overflows int64"
        )
    if ms is not None:
        return ms
    raise BadParam(f'invalid parameter "{name}": cannot parse {go_quote(text)} to a valid duration')


def format_ts(t_ms: int) -> str:
    """A timestamp in ms as Prometheus prints it: seconds, up to three decimals."""
    whole, frac = divmod(t_ms, 1000)
    if not frac:
        return str(whole)
    return f"{whole}.{frac:03d}".rstrip("0")


def format_values(values: np.ndarray) -> list[str]:
    """:func:`format_value` of every element, the common cases vectorised.

    >>> format_values(np.array([1.0, -3.0, 0.5, 1e-7, float("inf"), -0.0, 2.0**60]))
    ['1', '-3', '0.5', '0.0000001', '+Inf', '-0', '1152921504606847000']
    """
    v = np.asarray(values, dtype=np.float64)
    out = np.empty(len(v), dtype=object)
    finite = np.isfinite(v)
    size = np.abs(np.where(finite, v, 0.0))
    integral = finite & (v == np.trunc(np.where(finite, v, 0.0))) & (size < 1e16)
    integral &= ~((v == 0) & np.signbit(v))  # -0 prints "-0"
    plain = finite & ~integral & (size >= 1e-4) & (size < 1e16)  # repr has no exponent
    out[integral] = _numbers(v[integral].astype(np.int64))
    out[plain] = _numbers(v[plain])  # orjson's shortest digits are repr's in this range
    for i in np.flatnonzero(~(integral | plain)).tolist():
        out[i] = format_value(float(v[i]))
    return list(out.tolist())


def _numbers(x: np.ndarray) -> list[str]:
    """Each number of ``x`` as orjson writes it (in C: 7x ``map(repr, ...)``)."""
    if not len(x):
        return []
    return orjson.dumps(x, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")


def format_timestamps(t_ms: np.ndarray) -> list[str]:
    """:func:`format_ts` of every element (whole seconds vectorised).

    >>> format_timestamps(np.array([1000, 2000])), format_timestamps(np.array([1500]))
    (['1', '2'], ['1.5'])
    """
    t = np.asarray(t_ms, dtype=np.int64)
    if not (t % 1000).any():
        return list(map(str, (t // 1000).tolist()))
    return [format_ts(x) for x in t.tolist()]


def _distinct(
    keys: np.ndarray, fmt: Callable[[np.ndarray], list[str]], x: np.ndarray
) -> np.ndarray:
    """``fmt(x)`` as an object array, formatting each distinct ``keys`` value once
    (a matrix repeats its timestamps in every series, and often its values)."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    if len(uniq) == len(keys):
        return _objects(fmt(x))
    return _objects(fmt(x[first]))[inverse.reshape(-1)]


def _objects(strings: list[str]) -> np.ndarray:
    out = np.empty(len(strings), dtype=object)
    out[:] = strings
    return out


def matrix_json(series: Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]]) -> str:
    """The ``result`` of a matrix, as JSON text (built directly: it can be large).

    >>> one = ({"a": "1"}, np.array([1000, 2500]), np.array([0.5, -0.0]))
    >>> matrix_json([one, ({}, np.array([1000]), np.array([0.5]))])
    '[{"metric":{"a": "1"},"values":[[1,"0.5"],[2.5,"-0"]]},{"metric":{},"values":[[1,"0.5"]]}]'
    """
    series = list(series)
    if not series:
        return "[]"
    t = np.concatenate([np.asarray(s[1], dtype=np.int64) for s in series])
    v = np.concatenate([np.asarray(s[2], dtype=np.float64) for s in series])
    # every point is '[' ts ',"' value '"],' (the last of a series without its comma)
    items = np.empty(3 * len(t), dtype=object)
    items[0::3] = _distinct(t, lambda x: [f'[{s},"' for s in format_timestamps(x)], t)
    items[1::3] = _distinct(v.view(np.uint64), format_values, v)
    items[2::3] = '"],'
    out = []
    a = 0
    for labels, ts, _ in series:
        b = a + 3 * len(ts)
        points = "".join(items[a:b].tolist())[:-1]
        out.append(f'{{"metric":{json.dumps(labels)},"values":[{points}]}}')
        a = b
    return "[" + ",".join(out) + "]"


def grid_pays(
    series: Sequence[tuple[dict[str, str], np.ndarray, np.ndarray]],
    start_ms: int,
    step_ms: int,
    end_ms: int,
) -> bool:
    """Whether a ``format=grid`` answer stays within twice the cells of its points (plus
    a step row): a grid writes ``null`` for every missing step, so sparse series would
    cost series x steps whatever their points (10,000 x 11,000 = 550 MB); past that the
    matrix answers (the UI reads both).

    >>> sparse = [({}, np.array([0]), np.array([1.0]))] * 100
    >>> grid_pays(sparse, 0, 1000, 10_000), grid_pays(sparse[:1], 0, 1000, 10_000)
    (False, True)
    """
    n = max(0, (end_ms - start_ms) // step_ms + 1) if step_ms > 0 else 0
    points = sum(len(s[1]) for s in series)
    return len(series) * n <= 2 * points + n


def grid_json(
    series: Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]],
    start_ms: int,
    step_ms: int,
    end_ms: int,
) -> str:
    """A range query's matrix on its own grid (``format=grid``, not Prometheus's): each
    series' value strings at ``start_ms + k * step_ms`` up to ``end_ms``, ``null`` where
    it has no point; no timestamps. A point off the grid is left out.

    >>> one = ({"a": "1"}, np.array([1000, 3000]), np.array([0.5, np.nan]))
    >>> grid_json([one], 1000, 1000, 3000)[63:]
    '[{"metric":{"a": "1"},"v":["0.5",null,"NaN"]}]}'
    """
    series = list(series)
    n = max(0, (end_ms - start_ms) // step_ms + 1) if step_ms > 0 else 0
    head = f'{{"resultType":"matrix","start_ms":{int(start_ms)},"step_ms":{int(step_ms)},"result":'
    if not series or not n:
        return head + "[]}"
    t = np.concatenate([np.asarray(s[1], dtype=np.int64) for s in series])
    v = np.concatenate([np.asarray(s[2], dtype=np.float64) for s in series])
    k, off = np.divmod(t - start_ms, step_ms)
    plain = _orjson_plain(v)
    out = []
    a = 0
    for labels, ts, _ in series:
        b = a + len(ts)
        ks = k[a:b]
        full = b - a == n and not off[a:b].any() and ks[0] == 0 and ks[-1] == n - 1
        if full and plain[a:b].all():  # the common case: written by orjson, in C
            cells = _quoted(v[a:b])
        else:
            strings = format_values(v[a:b])
            row: list[str | None] = list(strings) if full else [None] * n
            if not full:
                for i in np.flatnonzero((off[a:b] == 0) & (ks >= 0) & (ks < n)).tolist():
                    row[int(ks[i])] = strings[i]
            cells = orjson.dumps(row)
        # labels as json.dumps writes them (ASCII-escaped: a label may hold anything)
        out.append(b'{"metric":' + json.dumps(labels).encode() + b',"v":' + cells + b"}")
        a = b
    return head + "[" + b",".join(out).decode() + "]}"


_POINT_ZERO = re.compile(rb"\.0(?=[,\]])")


def _orjson_plain(v: np.ndarray) -> np.ndarray:
    """Which values orjson writes as :func:`format_value` does once a whole number's
    ``.0`` is cut: whole numbers below 1e16 and the rest from 1e-4 (no exponent);
    not NaN, the infinities or -0."""
    finite = np.isfinite(v)
    size = np.abs(np.where(finite, v, 0.0))
    whole = v == np.trunc(np.where(finite, v, 0.0))
    return finite & (size < 1e16) & (whole | (size >= 1e-4)) & ~((v == 0) & np.signbit(v))


def _quoted(v: np.ndarray) -> bytes:
    """``["1","0.5",...]``: the value strings of ``v`` (every one :func:`_orjson_plain`),
    without a Python string per value.

    >>> _quoted(np.array([1.0, 0.5, 120.0, 1e15 + 0.5]))
    b'["1","0.5","120","1000000000000000.5"]'
    """
    body = _POINT_ZERO.sub(b"", orjson.dumps(v, option=orjson.OPT_SERIALIZE_NUMPY))
    return b'["' + body[1:-1].replace(b",", b'","') + b'"]'


def vector_json(series: Iterable[tuple[dict[str, str], np.ndarray, np.ndarray]]) -> str:
    """The ``result`` of a vector (each series' last point), as JSON text."""
    return (
        "["
        + ",".join(
            f'{{"metric":{json.dumps(labels)},"value":'
            f'[{format_ts(int(t[-1]))},"{format_value(float(v[-1]))}"]}}'
            for labels, t, v in series
            if len(t)
        )
        + "]"
    )


def envelope(data_json: str, warnings: Sequence[str] = ()) -> str:
    """The success envelope around already-encoded ``data``."""
    tail = f',"warnings":{json.dumps(list(warnings))}' if warnings else ""
    return f'{{"status":"success","data":{data_json}{tail}}}'


def error_body(error_type: str, message: str) -> dict[str, Any]:
    """The error envelope."""
    return {"status": "error", "errorType": error_type, "error": message}
