"""A repeat of an unchanged group must not look like a replay of the first message."""

from __future__ import annotations

from monitoring.alerts.alert_manager import AlertManager
from monitoring.alerts.model import Alert
from monitoring.sinks.notifiers.dispatcher import delivery_key

CONFIG = """
route: {receiver: ops, group_by: [alertname], group_wait: 0s, group_interval: 1m,
        repeat_interval: 10m}
receivers: [{name: ops}]
"""


def test_repeats_get_their_own_delivery_key_and_replays_do_not() -> None:
    am = AlertManager.from_yaml(CONFIG)
    t0 = 1_700_000_000_000
    am.receive(Alert({"alertname": "Hot", "room": "a"}, {}, "firing", t0), now_ms=t0)
    first = am.flush_due(t0)
    snapshot = am.to_bytes()
    assert am.flush_due(t0 + 60_000) == []  # unchanged, before repeat_interval
    repeat = am.flush_due(t0 + 600_000)
    assert len(repeat) == 1 and repeat[0].alerts == first[0].alerts
    assert [n.previous_ms for n in first + repeat] == [0, t0]
    key = lambda n: delivery_key(n.receiver, "webhook/0", n, str(n.previous_ms))  # noqa: E731
    assert key(repeat[0]) != key(first[0])
    # a replay after restoring the snapshot taken after the first flush repeats exactly
    restored = AlertManager.from_bytes(am.config, snapshot)
    assert [key(n) for n in restored.flush_due(t0 + 600_000)] == [key(n) for n in repeat]
