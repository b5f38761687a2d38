"""Exposition bodies to samples, through prometheus_client's parsers.

OpenMetrics (``application/openmetrics-text``) is parsed by
``prometheus_client.openmetrics.parser``. The Prometheus text format (0.0.4) is
parsed by ``prometheus_client.parser`` for everything it decides: a series (name and
labels) is read by the library the first time a target shows it, and the scraper
keeps the result per target (``Scraped.key`` is the series' text); a line is split
into that text, its value and timestamp with the library's value rules; a body with
any line outside the plain shape (``name{labels} value [timestamp]``), or with
``# TYPE`` lines it cannot read simply, goes to the library whole. This keeps a page
that repeats its series cheap (scraping is mostly re-reading the same series).

Names are kept as the page gives them, as Prometheus stores them (the library renames
a counter sample ``x`` of ``# TYPE x counter`` to ``x_total``; that is undone). Kinds
follow the family's ``# TYPE`` as the remote_write receiver maps them: counter samples
``COUNTER`` (``_created`` a ``GAUGE``), histogram ``_bucket`` ``HISTOGRAM_BUCKET`` and
``_sum``/``_count`` ``COUNTER``, summary quantiles ``SUMMARY``, gauges, info and
stateset ``GAUGE``, anything untyped ``UNTYPED``. A malformed body raises
``ValueError`` (the scrape fails, as Prometheus' does on a parse error).

>>> [(s.name, s.kind, s.value) for s in parse("# TYPE a_total counter\\na_total 3\\nb 1\\n", "")]
[('a_total', 'COUNTER', 3.0), ('b', 'UNTYPED', 1.0)]
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as om_parser

OPENMETRICS = "application/openmetrics-text"
# what Prometheus 2.42 asks for
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

_SUFFIXES = ("_total", "_bucket", "_sum", "_count", "_created")
_SUFFIX_KIND = {
    ("counter", "_total"): "COUNTER",
    ("counter", "_created"): "GAUGE",
    ("histogram", "_bucket"): "HISTOGRAM_BUCKET",
    ("histogram", "_sum"): "COUNTER",
    ("histogram", "_count"): "COUNTER",
    ("histogram", "_created"): "GAUGE",
    ("summary", "_sum"): "COUNTER",
    ("summary", "_count"): "COUNTER",
    ("summary", "_created"): "GAUGE",
}
_TYPE_KIND = {
    "counter": "COUNTER",
    "gauge": "GAUGE",
    "summary": "SUMMARY",
    "info": "GAUGE",
    "stateset": "GAUGE",
    "gaugehistogram": "GAUGE",
    "histogram": "HISTOGRAM_BUCKET",
    "unknown": "UNTYPED",
    "untyped": "UNTYPED",
}


class Scraped(NamedTuple):
    """One exposed sample: its timestamp (ms) only when the body gave one. ``labels``
    is None when only ``key`` (the series' text) is known: ``resolve`` reads it."""

    name: str
    labels: dict[str, str] | None
    value: float
    timestamp_ms: int | None
    kind: str
    key: str | None = None


class _Unusual(Exception):
    """A line the plain split does not take: the library parses the body whole."""


def parse(body: str, content_type: str) -> list[Scraped]:
    """Every sample of an exposition body, in order, with its labels."""
    return [s if s.labels is not None else resolve(s) for s in parse_lazy(body, content_type)]


# prometheus_client (0.26) reads labels in time about (line length) x (quotes in it) per
# line: a 2 MB line of 200,000 labels or 1,000,000 escaped quotes took 47-55 CPU-s
# (measured), on the thread that pushes every target's samples. A body whose lines sum
# past this much such work is refused before the library sees it (about 0.5 CPU-s; a
# 64 MB page of ordinary lines is about 1e9, a series at the contract's limits 1e7).
MAX_LABEL_WORK = 10_000_000_000


def check_label_work(body: str) -> None:
    """ValueError when reading ``body``'s labels would cost the library past
    ``MAX_LABEL_WORK`` (the sum over lines of length times quotes).

    >>> check_label_work('a{b="c"} 1\\n' * 1000)
    >>> check_label_work('a{' + 'b="",' * 100_000 + '} 1\\n')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ValueError: text format: a line of 500005 characters and 200000 quotes: ...
    """
    quotes = body.count('"')
    if quotes * len(body) <= MAX_LABEL_WORK:  # an upper bound of the sum: most pages
        return
    work = 0
    for line in body.split("\n"):
        q = line.count('"')
        if q:
            work += len(line) * q
            if work > MAX_LABEL_WORK:
                raise ValueError(
                    f"text format: a line of {len(line)} characters and {q} quotes: labels "
                    "this dense are not parsed"
                )


def parse_lazy(body: str, content_type: str) -> list[Scraped]:
    """Every sample; text-format series may come with ``key`` only (see ``resolve``)."""
    check_label_work(body)
    if content_type.split(";", 1)[0].strip().lower() == OPENMETRICS:
        return _library(body, openmetrics=True)
    try:
        return _split(body)
    except _Unusual:
        return _library(body, openmetrics=False)


def resolve(s: Scraped) -> Scraped:
    """The sample with its name and labels as the library reads its series' text."""
    if s.labels is not None or s.key is None:
        return s
    name, labels = series_of(s.key)
    return s._replace(name=name, labels=labels)


# The common shape of a series' text: a name, and labels with plain names (no ``__``
# prefix) and values without escapes or quotes, separated by single commas (one
# trailing comma allowed), no spaces. Read by these two expressions, it is what the
# library reads (a hypothesis test holds them equal); anything else goes to the library.
_PLAIN_SERIES = re.compile(
    r'[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\r\n]*"'
    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\r\n]*")*,?)?\})?'
)
_PLAIN_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\\r\n]*)"')


def series_of(text: str) -> tuple[str, dict[str, str]]:
    """A series' text (``name{labels}``) as prometheus_client's text parser reads it:
    the common shape by two regular expressions (about 15 times cheaper than the
    library's reading of one series), anything else by the library."""
    if _PLAIN_SERIES.fullmatch(text):
        brace = text.find("{")
        if brace < 0:
            return text, {}
        pairs = _PLAIN_PAIR.findall(text, brace)
        labels = dict(pairs)
        if len(labels) == len(pairs) and not any(k.startswith("__") for k in labels):
            return text[:brace], labels
    return _library_series(text)


def _library_series(text: str) -> tuple[str, dict[str, str]]:
    """A series' text read by prometheus_client's text parser."""
    try:
        families = list(text_parser.text_string_to_metric_families(text + " 0\n"))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"text format: {e or 'invalid series'}: {text[:200]!r}") from None
    if len(families) != 1 or len(families[0].samples) != 1:
        raise ValueError(f"text format: not one series: {text[:200]!r}")
    s = families[0].samples[0]
    return s.name, s.labels


def _split(body: str) -> list[Scraped]:
    types: dict[str, str] = {}
    kinds: dict[str, str] = {}
    out: list[Scraped] = []
    append = out.append
    for raw in body.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line[0] == "#":
            parts = line.split(None, 3)
            if len(parts) > 2 and parts[1] == "TYPE":
                if len(parts) < 4 or '"' in line:
                    raise _Unusual
                types[parts[2]] = parts[3]
                kinds.clear()
            continue
        close = line.rfind("}")
        if close >= 0:
            key, rest = line[: close + 1], line[close + 1 :]
            name = key[: key.find("{")].strip()
            if " # " in rest:
                raise _Unusual
        else:
            sp = line.find(" ")
            tab = line.find("\t")
            if tab >= 0 and (sp < 0 or tab < sp):
                sp = tab
            if sp < 0:
                raise _Unusual
            key = name = line[:sp]
            rest = line[sp:]
        tokens = rest.split()
        if not 1 <= len(tokens) <= 2 or not name:
            raise _Unusual
        ts: int | None = None
        if len(tokens) == 2:
            t = tokens[1]
            if not (t.isdigit() or (t[:1] == "-" and t[1:].isdigit())):
                raise _Unusual
            ts = int(t)
        kind = kinds.get(name)
        if kind is None:
            kind = kinds[name] = _kind(name, types)
        append(Scraped(name, None, _value(tokens[0]), ts, kind, key))
    return out


def _value(token: str) -> float:
    """The library's value rules (``_parse_value``): no underscores, ``int`` if it is
    one, else ``float``."""
    if "_" in token:
        raise ValueError(f"text format: invalid value {token[:50]!r}")
    try:
        if token.lstrip("+-").isdigit():
            return float(int(token))  # as the library: "-0" is the integer 0
        return float(token)
    except ValueError:
        raise ValueError(f"text format: invalid value {token[:50]!r}") from None


def _kind(name: str, types: dict[str, str]) -> str:
    t = types.get(name)
    if t is not None:
        return "UNTYPED" if t == "histogram" else _TYPE_KIND.get(t, "UNTYPED")
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            t = types.get(name[: -len(suffix)])
            if t is not None:
                return _SUFFIX_KIND.get((t, suffix), "UNTYPED")
    return "UNTYPED"


def _library(body: str, openmetrics: bool) -> list[Scraped]:
    families = (
        om_parser.text_string_to_metric_families(body)
        if openmetrics
        else text_parser.text_string_to_metric_families(body)
    )
    renamed = set() if openmetrics else _counters_without_total(body)
    out: list[Scraped] = []
    append = out.append
    try:
        for fam in families:
            typ = fam.type
            fam_kind = _TYPE_KIND.get(typ, "UNTYPED")
            fname = fam.name
            for s in fam.samples:
                name = s.name
                if name == fname:
                    kind = fam_kind if typ != "histogram" else "UNTYPED"
                else:
                    kind = _SUFFIX_KIND.get((typ, name[len(fname) :]), fam_kind)
                    if typ == "counter" and fname in renamed and name == fname + "_total":
                        name = fname  # the library's OpenMetrics renaming, undone
                append(Scraped(name, s.labels, float(s.value), _ms(s.timestamp), kind))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{'OpenMetrics' if openmetrics else 'text format'}: {e}") from None
    return out


def _counters_without_total(body: str) -> set[str]:
    out = set()
    for line in body.split("\n"):
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) == 4 and parts[3] == "counter" and not parts[2].endswith("_total"):
                out.add(parts[2])
    return out


def _ms(ts: Any) -> int | None:
    if ts is None:
        return None
    if isinstance(ts, float | int):
        return round(ts * 1000)
    return int(ts.sec) * 1000 + int(ts.nsec) // 1_000_000  # openmetrics Timestamp
