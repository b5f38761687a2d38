"""`monitoring doctor`: every check in order, each bounded, none able to stop the rest.

Checks that need the broker are reported as WARN "not checked" when no broker answers,
so that an outage gives one FAIL line with its fix, quickly (``timeout_s`` bounds each
Kafka call; an unreachable bootstrap fails within about that).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from monitoring.config import Settings, ms
from monitoring.ops import kafka_checks, local_checks
from monitoring.ops.checks import CheckResult, Status


def _guarded(name: str, check: Callable[[], list[CheckResult]]) -> list[CheckResult]:
    """Run one check; an exception becomes its FAIL line (the doctor goes on)."""
    t0 = time.monotonic()
    try:
        return check()
    except Exception as e:
        detail = f"the check itself failed: {type(e).__name__}: {str(e)[:300]}"
        return [CheckResult(name, Status.FAIL, detail, "see the error", time.monotonic() - t0)]


def run(
    config: str | None = None, settings: Settings | None = None, timeout_s: float = 5.0
) -> list[CheckResult]:
    """Every check, in order; ``settings`` skips loading them (the config line says so)."""
    if settings is None:
        first, loaded = local_checks.check_config(config)
        if loaded is None:
            return [first]
        settings = loaded
    else:
        first = CheckResult("config", Status.OK, "settings given")
    s = settings
    results = [first]
    broker, info = kafka_checks.check_broker(s, timeout_s)
    results.append(broker)
    if info is not None:
        topics = info.topics
        results += _guarded("topics", lambda: [kafka_checks.check_topics(s, timeout_s)])
        skews: list[int] = []
        results += _guarded(
            "schemas", lambda: [kafka_checks.check_fingerprints(s, timeout_s, topics, skews)]
        )
        limit = ms(s.aggregation.max_record_skew)
        results.append(kafka_checks.producer_skew_result(skews, limit))
        results += _guarded("clock", lambda: [kafka_checks.check_clock(s, timeout_s)])
    else:
        for name in ("topics", "schemas", "producer clocks", "clock"):
            results.append(CheckResult(name, Status.WARN, "not checked: no broker answers"))
    results.append(kafka_checks.check_credentials(s, info is not None, timeout_s))
    results += _guarded("migrations", lambda: local_checks.check_store(s, timeout_s))
    results += _guarded("disk", lambda: local_checks.check_disk(local_checks.data_dirs(s)))
    results += _guarded("rules", lambda: [local_checks.check_rules(s)])
    results += _guarded("receivers", lambda: [local_checks.check_receivers(s, timeout_s)])
    return results
