"""The alert evaluator's and the notifier's state checked as their processes restore
it: ``monitoring state rebuild alerting|notifier`` (read-only, safe while they run).

Each duty's state is one partition (``alerts.state``, ``alerts.notifier.state``),
written in transactions fenced by the duty's lease (docs/ha.md) and read whole by
every instance at start and by every standby as it is written. This reads it as
committed (``read_committed``), joins its chunks and restores it with the agent's own
code, and reports what it holds or why it does not read (the process would count
``bad-state`` and start afresh). There is no ``--from-source`` for them: why, and what
the recovery is, is in docs/operations.md (State rebuild).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry

from monitoring.config import Settings
from monitoring.ops.rebuild import PartitionReport
from monitoring.runtime.changelog import read_table
from monitoring.runtime.state_chunks import join

DUTIES = ("alerting", "notifier")


def check_duty_state(settings: Settings, duty: str, timeout_s: float = 60.0) -> PartitionReport:
    """``duty``'s state partition restored as its process restores it at start."""
    if duty == "alerting":
        from monitoring.agents.alerting import STATE_KEY, AlertingAgent, load_rules
        from monitoring.alerts.rules import RuleSet

        a = settings.alerting  # the configured rules (their states restore against them)
        rules = load_rules(a.rules, a.definitions) if a.rules or a.definitions else RuleSet()
        agent: Any = AlertingAgent(settings, CollectorRegistry(), rules)
        key = STATE_KEY
    elif duty == "notifier":
        from monitoring.agents.notifier import _POSITIONS, NotifierAgent
        from monitoring.alerts.manager_config import ManagerConfig

        agent = NotifierAgent(
            settings, CollectorRegistry(), ManagerConfig.load(settings.notifier.config)
        )
        key = _POSITIONS
    else:
        raise ValueError(f"{duty!r} is not one of {', '.join(DUTIES)}")
    physical = read_table(settings.kafka, agent.state_topic, 0, timeout_s)
    joined = join(physical)
    report = PartitionReport(0, len(physical), len(joined.table), True)
    restored = key in joined.table
    try:
        if joined.broken:
            raise ValueError(f"{len(joined.broken)} broken chunk group(s)")
        if restored:
            agent._restore(joined.table[key] if duty == "alerting" else joined.table)
    except Exception as e:  # what the process would log and start afresh on
        report.readable = False
        report.error = repr(e)[:300]
        return report
    report.summary = {"restored": restored, **_summary(duty, agent, joined.table)}
    return report


def _summary(duty: str, agent: Any, table: dict[bytes, bytes]) -> dict[str, Any]:
    if duty == "alerting":
        return {
            "last_evaluated_ms": agent.clock.last_evaluated_ms,
            "firing": len(agent.engine.firing()),
        }
    return {
        "groups": sum(1 for k in table if k.startswith(b"am:")),
        "delivered_keys": len(agent.delivered),
        "in_flight": len(agent._resend),
        "positions": {t: dict(ps) for t, ps in agent.positions.items()},
    }
