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

>>> from monitoring.alerts.state import Instance
>>> i = Instance({"alertname": "Hot", "room": "a"}, {}, 91.0, "pending", 20_000)
>>> [(s.name, s.labels.get("alertstate"), s.value) for s in samples([i])]
[('ALERTS', 'pending', 1.0), ('ALERTS_FOR_STATE', None, 20.0)]
>>> i.state = "firing"
>>> stale([("pending", i.labels)], [i])[0].labels["alertstate"]
'pending'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from monitoring.alerts.model import Recorded
from monitoring.alerts.state import Instance
from monitoring.metrics.samples import STALE_NAN

ALERTS = "ALERTS"
ALERTS_FOR_STATE = "ALERTS_FOR_STATE"
ALERTSTATE = "alertstate"

Seen = tuple[str, Mapping[str, str]]
"""What one instance wrote: its state and its labels."""


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


def seen(instances: Iterable[Instance]) -> list[Seen]:
    """The series ``instances`` write, as ``stale`` takes them."""
    return [(inst.state, inst.labels) for inst in instances]


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def stale(before: Sequence[Seen], after: Iterable[Instance]) -> list[Recorded]:
    """Staleness markers for the series ``before`` wrote that ``after`` does not."""
    if not before:
        return []
    now = {(inst.state, _key(inst.labels)) for inst in after}
    alive = {k for _, k in now}
    out: list[Recorded] = []
    for state, labels in before:
        key = _key(labels)
        if (state, key) not in now:
            out.append(Recorded(ALERTS, _alerts_labels(state, labels), STALE_NAN))
        if key not in alive:
            out.append(Recorded(ALERTS_FOR_STATE, dict(labels), STALE_NAN))
    return out
