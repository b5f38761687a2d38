"""Alert state and acknowledgements reach the store (migration 011) through the real
broker: alerts on the alerts topic, an acknowledgement through the notifier's API (which
puts it on the commands topic), the store process consuming both; then the incident,
its acknowledgement and MTTA as the dashboards and reports read them
(``monitoring.query.alert_state``), and hostile annotations kept verbatim."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml
from confluent_kafka import Producer
from fixtures.agents import wait_for
from fixtures.notify import api_up, free_port

from monitoring.alerts.model import Alert
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.query.alert_state import ACKED_INCIDENTS, MTTA_MTTR
from monitoring.wire.alert_encoding import ALERT, to_record
from monitoring.wire.codec import AvroCodec

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MIN = 60_000
HOSTILE = '<script>window.__xss=1</script>"><img src=x onerror=alert(1)>'


def send(p: Pipeline, alert: Alert, evaluated_at_ms: int) -> None:
    codec = AvroCodec.from_directory()
    prod = Producer({"bootstrap.servers": p.settings.kafka.bootstrap_servers})
    record = to_record(alert, evaluated_at_ms=evaluated_at_ms, rule="rules.yml/g/HighCPU")
    prod.produce(p.topic("alerts"), codec.encode(ALERT, record), alert.name.encode())
    assert prod.flush(10) == 0


def bind(sql: str, **params: int) -> str:
    """The statement with its parameters as literals (``Pipeline.query`` takes none)."""
    for name, value in params.items():
        sql = sql.replace(f"{{{name}:Int64}}", str(int(value))).replace(
            f"{{{name}:UInt32}}", str(int(value))
        )
    return sql


def test_alert_state_and_acks_reach_the_store(
    pipeline_factory, http_receiver_factory, tmp_path: Path
) -> None:
    receiver = http_receiver_factory()
    config = tmp_path / "notifier.yml"
    config.write_text(yaml.safe_dump({
        "route": {"receiver": "team", "group_by": ["alertname"], "group_wait": "0s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "team", "webhook_configs": [{"url": f"{receiver.url}/w"}]}],
    }))  # fmt: skip
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    p: Pipeline = pipeline_factory(notifier__config=str(config), notifier__api_port=str(port))
    p.start_store()
    p.start("notifier", "notifier")
    wait_for(lambda: api_up(api), 60, "the notifier's API")
    now = int(time.time() * 1000)
    fired = now - 10 * MIN
    hot = Alert({"alertname": "HighCPU", "host": "a"}, {"summary": HOSTILE}, "firing", fired,
                ends_at_ms=fired + 4 * MIN)  # fmt: skip
    cold = Alert({"alertname": "LowDisk", "host": "b"}, {}, "firing", now - 5 * MIN,
                 ends_at_ms=now + 4 * MIN)  # fmt: skip
    send(p, hot, fired)
    send(p, cold, now - 5 * MIN)
    wait_for(lambda: len(receiver.bodies) >= 1, 60, "the notifier delivered")
    ack = {"fingerprint": hot.fingerprint, "by": "ann", "comment": HOSTILE}
    assert httpx.post(f"{api}/api/v2/acks", json=ack, timeout=10).status_code == 200
    resolved_at = int(time.time() * 1000)
    send(p, Alert(hot.labels, {}, "resolved", fired, ends_at_ms=resolved_at), resolved_at)

    def stored() -> bool:
        events = p.query("SELECT count() FROM alert_events FINAL")[0][0]
        acks = p.query("SELECT count() FROM alert_acks FINAL")[0][0]
        return int(events) >= 3 and int(acks) >= 1

    wait_for(stored, 90, f"alert state and the ack stored\n{p.logs()}")
    [ack_row] = p.query("SELECT fingerprint, by, comment, toUnixTimestamp64Milli(time) "
                        "FROM alert_acks FINAL")  # fmt: skip
    assert ack_row[:3] == [hot.fingerprint, "ann", HOSTILE]
    acked_ms = int(ack_row[3])
    assert fired < acked_ms <= int(time.time() * 1000)
    where = f"fingerprint = '{hot.fingerprint}' AND status = 'FIRING'"
    [summary] = p.query(f"SELECT annotations['summary'] FROM alert_events FINAL WHERE {where}")
    assert summary == [HOSTILE]

    end = int(time.time() * 1000) + 1_000
    rows = p.query(bind(ACKED_INCIDENTS, start_ms=now - 60 * MIN, end_ms=end, limit=100))
    by_fp = {r[0]: r for r in rows}
    assert set(by_fp) == {hot.fingerprint, cold.fingerprint}
    _, name, _, fired_ms, until_ms, resolved_ms, acked, acked_by = by_fp[hot.fingerprint]
    assert (name, int(fired_ms), int(resolved_ms), int(until_ms)) == (
        "HighCPU",
        fired,
        resolved_at,
        resolved_at,
    )
    assert (int(acked), acked_by) == (acked_ms, "ann")
    cold_row = by_fp[cold.fingerprint]
    assert cold_row[5] is None and int(cold_row[6]) == 0  # firing, nobody acknowledged
    [mtta] = p.query(bind(MTTA_MTTR, start_ms=now - 60 * MIN, end_ms=end, limit=100))
    incidents, acknowledged, mtta_s, resolved, mttr_s = mtta
    assert (int(incidents), int(acknowledged), int(resolved)) == (2, 1, 1)
    assert float(mtta_s) == pytest.approx((acked_ms - fired) / 1000)
    assert float(mttr_s) == pytest.approx((resolved_at - fired) / 1000)
