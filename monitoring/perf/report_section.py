"""A "Performance" section for ``monitoring report`` (``reports.sections.Section``).

:func:`fill` writes into a section: per service found in the period (the services of
``http_server_requests_total``, at most ``max_services``) its routes by share of
server time, and every suggestion ``store_io.suggestions`` makes (hot routes and models,
error hotspots, saturation, capacity) with its evidence: the report's ``performance``
section (``Sections.performance``).
"""

from __future__ import annotations

import math

from monitoring.perf import store_io
from monitoring.perf.tracking import HTTP_REQUESTS
from monitoring.query.client import StoreClient
from monitoring.reports.sections import Block, Section

MAX_SERVICES = 20


def _ms(s: float) -> str:
    return f"{s * 1000:.1f} ms" if math.isfinite(s) else "n/a"


def services(client: StoreClient, start_s: float, end_s: float, limit: int) -> list[str]:
    """Services with HTTP requests in the period, busiest first."""
    span = f"{max(1, round(end_s - start_s))}s"
    found = client.query(f"sum by (service) (increase({HTTP_REQUESTS}[{span}]))", end_s)
    ranked = sorted(found, key=lambda s: -float(s.values[0]) if len(s.values) else 0.0)
    return [s.labels["service"] for s in ranked if s.labels.get("service")][:limit]


def fill(
    section: Section,
    client: StoreClient,
    start_s: float,
    end_s: float,
    window_s: float = 300,
    max_services: int = MAX_SERVICES,
) -> None:
    """Fill ``section`` for the period (see the module)."""
    names = services(client, start_s, end_s, max_services)
    since = end_s - start_s
    window = max(window_s, since / store_io.MAX_WINDOWS)
    section.columns = ["service", "kind", "suggestion", "evidence"]
    for i, service in enumerate(names or [None]):
        found = store_io.suggestions(
            client, service, since_s=since, until_s=end_s, window_s=window, models=i == 0
        )
        for s in found:
            evidence = ", ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in s.evidence.items()
            )
            section.rows.append([service or "", s.kind, s.message, evidence])
        if service is None:
            continue
        routes = store_io.fetch_routes(client, {"service": service}, start_s, end_s)
        total = sum(r.seconds for r in routes if r.seconds > 0) or math.nan
        rows = [
            [r.method + " " + r.route, f"{r.rate_rps:.3g}", _ms(r.mean_s), _ms(r.p99_s),
             f"{r.seconds / total:.0%}" if math.isfinite(total) else "n/a",
             f"{r.errors / r.requests:.2%}" if r.requests > 0 else "n/a"]
            for r in sorted(routes, key=lambda r: -r.seconds)[:10]
        ]  # fmt: skip
        if rows:
            section.blocks.append(
                Block(
                    f"{service}: routes by share of server time",
                    ["route", "req/s", "mean", "p99", "share of time", "errors"],
                    rows,
                )
            )
    if names:
        section.summary = (
            f"{len(section.rows)} suggestion(s) for {len(names)} service(s); "
            "rate x mean latency ranks where time goes"
        )
    elif section.rows:
        section.summary = f"{len(section.rows)} suggestion(s) for models"
    section.notes.append(
        "Computed by monitoring perf suggest: each suggestion names the numbers it rests on."
    )
