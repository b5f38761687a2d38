"""OpenTelemetry names and attributes as Prometheus names and labels, by the
OpenTelemetry specification's "Prometheus and OpenMetrics Compatibility" page
(`specification/compatibility/prometheus_and_openmetrics.md`, section "OTLP Metric
points to Prometheus") and the unit words of Prometheus's own OTLP translator:

* invalid characters become ``_``, runs of ``_`` become one; a leading digit gets
  ``_`` (metric names) or ``key_`` (label names); a label name starting with ``_``
  gets ``key`` (labels starting ``__`` are reserved);
* the unit is spelt out (``ms`` -> ``milliseconds``, ``By`` -> ``bytes``), ``{...}``
  annotations dropped, ``foo/bar`` -> ``foo_per_bar``, ``1`` -> ``ratio`` (gauges
  only), and appended unless the name already holds it; the unit comes before a
  type suffix; monotonic sums end in ``_total``;
* attributes that sanitise to one label name are joined with ``;`` in the order of
  their original keys; non-string values are written as the attribute spec says
  (JSON for arrays and maps, base64 for bytes).

>>> metric_name("http.server.duration", "ms", counter=False, gauge=False)
'http_server_duration_milliseconds'
>>> metric_name("requests", "{request}", counter=True, gauge=False)
'requests_total'
>>> metric_name("cpu.utilization", "1", counter=False, gauge=True)
'cpu_utilization_ratio'
>>> label_name("http.status_code"), label_name("0day"), label_name("_x")
('http_status_code', 'key_0day', 'key_x')
"""

from __future__ import annotations

import base64
import functools
import json
import re
from collections.abc import Iterable
from typing import Any

_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]+")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]+")
_RUNS = re.compile(r"__+")

UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "%": "percent",
}
PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}


def _clean(text: str, bad: re.Pattern[str]) -> str:
    return _RUNS.sub("_", bad.sub("_", text))


def unit_words(unit: str, gauge: bool) -> str:
    """A unit as the words of a name suffix ('' for none).

    >>> unit_words("By/s", False), unit_words("{packet}", False), unit_words("1", False)
    ('bytes_per_second', '', '')
    """
    unit = re.sub(r"\{[^}]*\}", "", unit).strip()
    if not unit:
        return ""
    if unit == "1":
        return "ratio" if gauge else ""
    main, _, per = unit.partition("/")
    words = UNITS.get(main, main)
    if per:
        pw = PER_UNITS.get(per, per)
        words = f"{words}_per_{pw}" if words else f"per_{pw}"
    return _clean(words, _BAD_NAME).strip("_")


def metric_name(name: str, unit: str, counter: bool, gauge: bool) -> str:
    """The Prometheus family name of an OTLP metric ('' when nothing valid is left)."""
    n = _clean(name, _BAD_NAME).strip("_")
    if not n:
        return ""
    if n[0].isdigit():
        n = "_" + n
    tokens = n.split("_")
    words = unit_words(unit, gauge)
    if words:
        w = words.split("_")
        if not any(tokens[i : i + len(w)] == w for i in range(len(tokens) - len(w) + 1)):
            n = f"{n}_{words}"
    if counter and not n.endswith("_total"):
        n += "_total"
    return n


def label_name(key: str) -> str:
    """A label name for an attribute key ('' when nothing valid is left); keys of a
    label name's length are cached (a sender's keys can be any length)."""
    if len(key) > MAX_CACHED_KEY:
        return _label_name(key)
    return _cached_label_name(key)


MAX_CACHED_KEY = 256  # past the contract's label names (128): refused as labels anyway


def _label_name(key: str) -> str:
    n = _clean(key, _BAD_LABEL)
    if not n or n == "_":
        return ""
    if n[0].isdigit():
        return "key_" + n
    if n[0] == "_":
        return "key" + n
    return n


_cached_label_name = functools.lru_cache(maxsize=4096)(_label_name)


def value_text(v: Any) -> str:
    """An ``AnyValue`` as label text.

    >>> from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    >>> value_text(AnyValue(bool_value=True)), value_text(AnyValue(int_value=7))
    ('true', '7')
    """
    which = v.WhichOneof("value")
    if which == "string_value":
        return str(v.string_value)
    if which is None:
        return ""
    return json.dumps(_plain(v), separators=(",", ":"), ensure_ascii=False).strip('"')


def _plain(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "bool_value":
        return bool(v.bool_value)
    if which == "int_value":
        return int(v.int_value)
    if which == "double_value":
        d = float(v.double_value)
        return d if d == d and abs(d) != float("inf") else str(d)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if which == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    if which == "string_value":
        return str(v.string_value)
    return None


def labels_of(attributes: Iterable[Any]) -> dict[str, str]:
    """Attributes (``KeyValue``s) as labels; keys that sanitise alike are joined with
    ``;`` in their original keys' order; empty values are no label."""
    out: dict[str, str] = {}
    for kv in attributes:
        name = label_name(kv.key)
        if not name:
            continue
        if name in out:
            return _joined(attributes)
        v = kv.value
        out[name] = v.string_value if v.WhichOneof("value") == "string_value" else value_text(v)
    return {k: v for k, v in out.items() if v}


def _joined(attributes: Iterable[Any]) -> dict[str, str]:
    groups: dict[str, list[tuple[str, str]]] = {}
    for kv in attributes:
        name = label_name(kv.key)
        if name:
            groups.setdefault(name, []).append((kv.key, value_text(kv.value)))
    out = {name: ";".join(t for _, t in sorted(pairs)) for name, pairs in groups.items()}
    return {k: v for k, v in out.items() if v}
