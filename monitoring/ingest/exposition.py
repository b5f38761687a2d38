"""Exposition bodies to samples, through prometheus_client's parsers.

The Prometheus text format (0.0.4) goes to ``prometheus_client.parser``, OpenMetrics
(``application/openmetrics-text``) to ``prometheus_client.openmetrics.parser``. Kinds
follow the family's ``# TYPE`` as the remote_write receiver maps them: counter samples
``COUNTER`` (``_created`` a ``GAUGE``), histogram ``_bucket`` ``HISTOGRAM_BUCKET`` and
``_sum``/``_count`` ``COUNTER``, summary quantiles ``SUMMARY``, gauges, info and stateset
``GAUGE``, anything untyped ``UNTYPED``. A malformed body raises ``ValueError`` (the
scrape fails, as Prometheus' does on a parse error).

>>> [(s.name, s.kind, s.value) for s in parse("# TYPE a_total counter\\na_total 3\\nb 1\\n", "")]
[('a_total', 'COUNTER', 3.0), ('b', 'UNTYPED', 1.0)]
"""

from __future__ import annotations

from typing import Any, NamedTuple

from prometheus_client import parser as text_parser
from prometheus_client.openmetrics import parser as om_parser

OPENMETRICS = "application/openmetrics-text"
# what Prometheus 2.42 asks for
ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

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
    """One exposed sample: its timestamp (ms) only when the body gave one."""

    name: str
    labels: dict[str, str]
    value: float
    timestamp_ms: int | None
    kind: str


def parse(body: str, content_type: str) -> list[Scraped]:
    """Every sample of an exposition body, in order."""
    openmetrics = content_type.split(";", 1)[0].strip().lower() == OPENMETRICS
    families = (
        om_parser.text_string_to_metric_families(body)
        if openmetrics
        else text_parser.text_string_to_metric_families(body)
    )
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
                append(Scraped(name, s.labels, float(s.value), _ms(s.timestamp), kind))
    except (ValueError, TypeError, KeyError, IndexError) as e:
        raise ValueError(f"{'OpenMetrics' if openmetrics else 'text format'}: {e}") from None
    return out


def _ms(ts: Any) -> int | None:
    if ts is None:
        return None
    if isinstance(ts, float | int):
        return round(ts * 1000)
    return int(ts.sec) * 1000 + int(ts.nsec) // 1_000_000  # openmetrics Timestamp
