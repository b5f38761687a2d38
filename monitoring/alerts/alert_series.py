"""The ``ALERTS`` and ``ALERTS_FOR_STATE`` series of active alerts, as Prometheus writes them.

At every evaluation of an alerting rule, for each pending or firing instance (one held
by ``keep_firing_for`` is firing), at the evaluation time:

* ``ALERTS{<instance labels>, alertstate="pending"|"firing"} 1``
* ``ALERTS_FOR_STATE{<instance labels>} <active since, whole unix seconds>``

The instance labels already hold ``alertname`` and the rule's labels; ``alertstate``
overrides an output label of that name, as in Prometheus. A resolved or vanished
instance writes nothing. A series written at the rule's previous evaluation and not at
this one gets Prometheus's staleness marker at this one (its rule group's
``seriesInPreviousEval``): a pending alert that fires ends its ``pending`` series there,
a resolved one ends both. The previous evaluation's series are those of the state
before the step, so they need no state of their own and survive a checkpoint.

>>> from monitoring.alerts.state import Instance, Key
>>> i = Instance({"alertname": "Hot", "room": "a"}, {}, 91.0, "pending", 20_000)
>>> [(s.name, s.labels.get("alertstate"), s.value) for s in samples([i])]
[('ALERTS', 'pending', 1.0), ('ALERTS_FOR_STATE', None, 20.0)]
>>> before = seen({("k",): i})
>>> i.state = "firing"
>>> [(s.name, s.labels.get("alertstate")) for s in stale(before, {("k",): i})]
[('ALERTS', 'pending')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from monitoring.alerts.model import Recorded
from monitoring.alerts.state import Instance, Key
from monitoring.metrics.samples import STALE_NAN

ALERTS = "ALERTS"
ALERTS_FOR_STATE = "ALERTS_FOR_STATE"
ALERTSTATE = "alertstate"

Seen = dict[Key, tuple[str, Mapping[str, str]]]
"""What a rule's instances wrote, by instance key: each one's state and labels."""


def _alerts_labels(state: str, labels: Mapping[str, str]) -> dict[str, str]:
    out = dict(labels)
    out[ALERTSTATE] = state
    return out


def samples(instances: Iterable[Instance]) -> list[Recorded]:
    """The two samples of every instance (``ALERTS``, then ``ALERTS_FOR_STATE``)."""
    out: list[Recorded] = []
    for inst in instances:
        out.append(Recorded(ALERTS, _alerts_labels(inst.state, inst.labels), 1.0))
        out.append(Recorded(ALERTS_FOR_STATE, dict(inst.labels), float(inst.active_at_ms // 1000)))
    return out


def seen(instances: Mapping[Key, Instance]) -> Seen:
    """The series ``instances`` (a state machine's, by key) write, as ``stale`` takes them."""
    return {key: (inst.state, inst.labels) for key, inst in instances.items()}


def stale(before: Seen, after: Mapping[Key, Instance]) -> list[Recorded]:
    """Staleness markers for the series ``before`` wrote that ``after`` does not."""
    out: list[Recorded] = []
    for key, (state, labels) in before.items():
        now = after.get(key)
        if now is None or now.state != state:
            out.append(Recorded(ALERTS, _alerts_labels(state, labels), STALE_NAN))
        if now is None:
            out.append(Recorded(ALERTS_FOR_STATE, dict(labels), STALE_NAN))
    return out
