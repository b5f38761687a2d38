"""The built-in Watchdog: a rule that always fires, as kube-prometheus ships it.

``Watchdog: vector(1)`` fires at every evaluation, so the evaluator re-sends it every
``alerting.resend_interval`` with a horizon a few intervals ahead; the notifier routes
it to a dead man's switch (``infra/alertmanager/monitoring-alertmanager.yml``) with a
short ``repeat_interval``. When the worker stops closing windows, the evaluator
stops, or the alerts topic stops flowing, the refreshes stop, the notifier resolves
the alert at its horizon and the switch stops hearing from it: the receiver notices a
silent pipeline. A user rule of the same name replaces the built-in one.

>>> [(r.name, r.expr, dict(r.labels)) for r in with_watchdog([])]
[('Watchdog', 'vector(1)', {'severity': 'none'})]
"""

from __future__ import annotations

from collections.abc import Sequence

from monitoring.alerts.rules import Rule

WATCHDOG = "Watchdog"
GROUP = "monitoring.builtin"
SUMMARY = (
    "An alert that should always be firing to certify that the alerting pipeline is "
    "working properly."
)
DESCRIPTION = (
    "This is an alert meant to ensure that the entire alerting pipeline is functional. "
    "It is always firing, therefore it should always be firing in the notifier and always "
    "fire against a receiver. A dead man's switch (Dead Man's Snitch, healthchecks.io, "
    "PagerDuty's heartbeat) alerts when these notifications stop."
)


def watchdog_rule() -> Rule:
    """The Watchdog rule (``vector(1)``, ``severity: none``)."""
    return Rule.build(
        WATCHDOG,
        "vector(1)",
        labels={"severity": "none"},
        annotations={"summary": SUMMARY, "description": DESCRIPTION},
        group=GROUP,
        file="<builtin>",
    )


def with_watchdog(rules: Sequence[Rule]) -> list[Rule]:
    """``rules`` and the Watchdog after them, unless one of them is named Watchdog."""
    if any(r.name == WATCHDOG for r in rules):
        return list(rules)
    return [*rules, watchdog_rule()]
