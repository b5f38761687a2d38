"""High availability of the alert evaluator and the notifier, as processes on the real
broker: two of each, one active per duty (the lease holder), the other standing by.

* kill -9 of the active evaluator and notifier between the firing and the resolution:
  the standbys take over (the time is printed; the goal is 10 s), every end is
  evaluated by one of them, and the webhook gets the no-fault oracle's notifications,
  each exactly once.
* SIGSTOP of both active ones: the standbys take over; SIGCONT: the former holders find
  themselves fenced, end their term and stand by; nothing they wrote after the
  takeover is committed to either state topic, and no notification is sent twice.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from fixtures.notify import HttpReceiver, free_port
from fixtures.progress import read_to_end

from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.metrics.collector import MetricsCollector
from monitoring.runtime.outputs import consumer_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RULES = """
groups:
  - name: rooms
    rules:
      - alert: RoomHot
        expr: temp > 80
        labels: {severity: critical}
"""
HOT = range(10, 20)
W = 10_000


def produce(p: Pipeline, start: int, windows: range) -> None:
    with MetricsCollector(p.settings, batch=True, linger=0.05) as mc:
        for w in windows:
            for room in ("a", "b", "c"):
                hot = room in "ab" and w in HOT
                for i in range(10):
                    ts = start + w * W + i * 1_000
                    mc.record("temp", 90.0 if hot else 50.0, {"room": room}, timestamp_ms=ts)
        assert mc.flush(60) == 0


def health(port: int) -> dict[str, Any]:
    try:
        got: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
        return got
    except (httpx.TransportError, ValueError):
        return {}


def role(port: int) -> str:
    return str(health(port).get("role", ""))


def wait_for(p: Pipeline, cond: Any, timeout: float, what: str) -> None:
    try:
        p.wait(cond, timeout, what)
    except TimeoutError as e:
        raise AssertionError(f"{e}\n{p.logs(2500)}") from None


def events(p: Pipeline, name: str, event: str) -> list[dict[str, Any]]:
    path = p.dir / f"{name}.log"
    out = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if f'"{event}"' in line:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("event") == event:
                out.append(rec)
    return out


def committed(p: Pipeline, role_name: str) -> list[tuple[int, bytes | None, bytes]]:
    """(offset, x-holder, key) of every committed record of a one-partition topic."""
    c = Consumer(
        consumer_config(p.settings.kafka, "t-ha-reader",
                        **{"enable.partition.eof": True, "isolation.level": "read_committed"})
    )  # fmt: skip
    c.assign([TopicPartition(p.topic(role_name), 0, OFFSET_BEGINNING)])
    out: list[tuple[int, bytes | None, bytes]] = []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    return out
                continue
            holder = dict(m.headers() or []).get("x-holder")
            out.append((m.offset(), holder, m.key()))
    finally:
        c.close()
    raise AssertionError(f"{role_name}: no end reached")


def notified(hook: HttpReceiver) -> Counter[tuple[str, str]]:
    """(status, room) of every alert in every notification the webhook accepted."""
    return Counter((a["status"], a["labels"]["room"]) for b in hook.bodies for a in b["alerts"])


ORACLE = Counter({("firing", "a"): 1, ("firing", "b"): 1, ("resolved", "a"): 1,
                  ("resolved", "b"): 1})  # fmt: skip


class Pair:
    """Two instances of one duty, each with its own health port."""

    def __init__(self, p: Pipeline, duty: str, names: tuple[str, str], ports: tuple[int, int]):
        self.p, self.duty, self.names, self.ports = p, duty, names, ports

    def roles(self) -> list[str]:
        return [role(port) for port in self.ports]

    def settled(self) -> bool:
        return sorted(self.roles()) == ["active", "standby"]

    def active(self) -> int:
        return self.roles().index("active")


def deployment(
    pipeline_factory: Any, http_receiver_factory: Any, tmp_path: Path
) -> tuple[Pipeline, HttpReceiver, Pair, Pair]:
    hook = http_receiver_factory()
    rules = tmp_path / "rooms.rules.yml"
    rules.write_text(RULES)
    am_config = tmp_path / "notifier.yml"
    am_config.write_text(yaml.safe_dump({
        "route": {"receiver": "ops", "group_by": ["alertname"], "group_wait": "300ms",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "ops", "webhook_configs": [{"url": f"{hook.url}/hook",
                                                           "send_resolved": True}]}],
    }))  # fmt: skip
    p: Pipeline = pipeline_factory(
        alerting__rules=f'["{rules}"]',
        alerting__checkpoint_interval="200ms",
        alerting__grace="5s",
        alerting__alert_series="true",
        notifier__config=str(am_config),
        notifier__checkpoint_interval="200ms",
        anomaly__enabled="false",
        ha__session_timeout="6s",
        ha__heartbeat_interval="1s",
    )
    p.start("worker", "worker")
    e_ports, n_ports = (free_port(), free_port()), (free_port(), free_port())
    for name, port in zip(("alerting-a", "alerting-b"), e_ports, strict=True):
        p.start("alerting", name, alerting__metrics_port=str(port))
    for name, port in zip(("notifier-a", "notifier-b"), n_ports, strict=True):
        p.start("notifier", name, notifier__api_port=str(port))
    evaluators = Pair(p, "alerting", ("alerting-a", "alerting-b"), e_ports)
    notifiers = Pair(p, "notifier", ("notifier-a", "notifier-b"), n_ports)
    wait_for(p, lambda: evaluators.settled() and notifiers.settled(), 120, "active + standby")
    standby = notifiers.ports[1 - notifiers.active()]
    got = httpx.get(f"http://127.0.0.1:{standby}/api/v2/alerts", timeout=10)
    assert got.status_code == 503 and "standby" in got.text  # ask the active one
    return p, hook, evaluators, notifiers


def take_over_time(p: Pipeline, pair: Pair, survivor: int, since: float) -> float:
    wait_for(p, lambda: role(pair.ports[survivor]) == "active", 60, f"{pair.duty} takeover")
    return time.monotonic() - since


def test_kill_9_of_the_active_evaluator_and_notifier(
    pipeline_factory: Any, http_receiver_factory: Any, tmp_path: Path
) -> None:
    p, hook, evaluators, notifiers = deployment(pipeline_factory, http_receiver_factory, tmp_path)
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 10 * 60_000
    produce(p, start, range(0, 15))
    wait_for(p, lambda: len(hook.bodies) >= 1, 90, "the firing notification")
    # the delivery is in the committed delivery log (a kill between the receiver's answer
    # and that commit sends it again: at least once, docs/notifier.md)
    wait_for(p, lambda: delivered_logged(p) >= 1, 30, "the delivery log")
    e_old, n_old = evaluators.active(), notifiers.active()
    t0 = time.monotonic()
    p.kill(evaluators.names[e_old])
    p.kill(notifiers.names[n_old])
    e_took = take_over_time(p, evaluators, 1 - e_old, t0)
    n_took = take_over_time(p, notifiers, 1 - n_old, t0)
    print(f"failover after kill -9: evaluator {e_took:.1f} s, notifier {n_took:.1f} s")
    assert e_took < 30 and n_took < 30
    produce(p, start, range(15, 30))
    wait_for(p, lambda: notified(hook)[("resolved", "a")] >= 1, 90, "the resolution")
    survivor = notifiers.ports[1 - n_old]
    wait_for(p, lambda: caught_up(p, survivor), 60, "the notifier done with every alert")
    assert notified(hook) == ORACLE, hook.bodies
    # no end missed: every window end the worker wrote (from the first evaluated on) is
    # evaluated by one evaluator or the other
    wait_for(p, lambda: not unevaluated(p, evaluators), 60, "every window end evaluated")
    ends = evaluated(p, evaluators)
    assert max(ends) >= start + 28 * W, sorted(ends)
    # every room has every 10 s window on the topic: the worker closed its partitions idle
    # during the failover, and the second burst must not be late for its 10 s windows
    # (they once were up to the end of the minute the idle close closed: 3 ends missing)
    want = set(range(start + W, start + 28 * W + 1, W))
    for room, got in window_ends_by_room(p).items():
        assert want <= got, (room, sorted(e - start for e in want - got))


def evaluated(p: Pipeline, evaluators: Pair) -> set[int]:
    return {e["at_ms"] for name in evaluators.names for e in events(p, name, "evaluated")}


def unevaluated(p: Pipeline, evaluators: Pair) -> list[int]:
    """Window ends on the aggregates topic that no evaluator evaluated."""
    ends = evaluated(p, evaluators)
    return sorted(e for e in window_ends(p) if e >= min(ends, default=0) and e not in ends)


def delivered_logged(p: Pipeline) -> int:
    """Delivered records in the committed delivery log."""
    from monitoring.wire.codec import AvroCodec

    codec = AvroCodec.from_directory()
    topic = p.topic("alerts.deliveries")
    c = Consumer(consumer_config(p.settings.kafka, "t-ha-deliveries"))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {q: c.get_watermark_offsets(TopicPartition(topic, q), timeout=10)[1] for q in parts}
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in parts])
        n, read = 0, dict.fromkeys(parts, 0)
        deadline = time.monotonic() + 20
        while any(c.position([TopicPartition(topic, q)])[0].offset < ends[q]
                  for q in parts if ends[q] > 0) and time.monotonic() < deadline:  # fmt: skip
            m = c.poll(0.2)
            if m is None or m.error() is not None:
                continue
            read[m.partition()] = m.offset() + 1
            n += codec.decode(m.value()).record["outcome"] == "delivered"
        return n
    finally:
        c.close()


def caught_up(p: Pipeline, port: int) -> bool:
    """The active notifier has nothing in flight and its committed positions reach the
    end of the alerts topic."""
    h = health(port)
    if h.get("role") != "active" or h.get("deliveries_in_flight", 1):
        return False
    from monitoring.runtime.changelog import read_table
    from monitoring.runtime.state_chunks import join

    table = join(read_table(p.settings.kafka, p.topic("alerts.notifier.state"), 0)).table
    if b"positions" not in table:
        return False
    done = json.loads(table[b"positions"])["p"].get(p.topic("alerts"), {})
    return all(int(done.get(str(q), 0)) > last for q, last in last_records(p).items())


def last_records(p: Pipeline) -> dict[int, int]:
    """The offset of the last committed record of each partition of ``alerts`` that has
    one (the end offset is past the transactions' commit markers)."""
    topic = p.topic("alerts")
    c = Consumer(
        consumer_config(p.settings.kafka, "t-ha-ends",
                        **{"enable.partition.eof": True, "isolation.level": "read_committed"})
    )  # fmt: skip
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in parts])
        last: dict[int, int] = {}
        eof: set[int] = set()
        deadline = time.monotonic() + 30
        while len(eof) < len(parts) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                continue
            last[m.partition()] = m.offset()
            eof.discard(m.partition())
        return last
    finally:
        c.close()


def after_takeover(records: list[tuple[int, bytes | None, bytes]]) -> set[bytes | None]:
    """Holders of the records after the first one written by the last holder."""
    if not records:
        return set()
    last = records[-1][1]
    first = next(i for i, r in enumerate(records) if r[1] == last)
    return {r[1] for r in records[first:]}


def test_a_paused_former_holder_is_fenced(
    pipeline_factory: Any, http_receiver_factory: Any, tmp_path: Path
) -> None:
    p, hook, evaluators, notifiers = deployment(pipeline_factory, http_receiver_factory, tmp_path)
    now = int(time.time() * 1000)
    start = now - now % 60_000 - 10 * 60_000
    produce(p, start, range(0, 8))  # nothing firing yet: both write state
    e_old, n_old = evaluators.active(), notifiers.active()
    wait_for(p, lambda: committed(p, "alerts.state"), 60, "an evaluator checkpoint")
    # a silence (of nothing here) makes the notifier write its state too
    silence = {"matchers": [{"name": "room", "value": "none", "isRegex": False}],
               "startsAt": "2020-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
               "createdBy": "test", "comment": "state"}  # fmt: skip
    url = f"http://127.0.0.1:{notifiers.ports[n_old]}/api/v2/silences"
    assert httpx.post(url, json=silence, timeout=10).status_code == 200
    wait_for(p, lambda: committed(p, "alerts.notifier.state"), 60, "a notifier checkpoint")
    old_procs = [p.procs[evaluators.names[e_old]], p.procs[notifiers.names[n_old]]]
    t0 = time.monotonic()
    for proc in old_procs:
        proc.send_signal(signal.SIGSTOP)
    try:
        e_took = take_over_time(p, evaluators, 1 - e_old, t0)
        n_took = take_over_time(p, notifiers, 1 - n_old, t0)
        print(f"failover after SIGSTOP: evaluator {e_took:.1f} s, notifier {n_took:.1f} s")
        produce(p, start, range(8, 15))  # fires; the paused ones have it waiting too
        wait_for(p, lambda: len(hook.bodies) >= 1, 90, "the firing notification")
    finally:
        for proc in old_procs:
            proc.send_signal(signal.SIGCONT)
    resumed = [evaluators.names[e_old], notifiers.names[n_old]]
    wait_for(
        p,
        lambda: (
            all(events(p, name, "term_ended") for name in resumed)
            and role(evaluators.ports[e_old]) == "standby"
            and role(notifiers.ports[n_old]) == "standby"
        ),
        60,
        "the resumed former holders fenced and standing by",
    )
    assert role(evaluators.ports[1 - e_old]) == "active"
    assert role(notifiers.ports[1 - n_old]) == "active"
    produce(p, start, range(15, 30))
    wait_for(p, lambda: notified(hook)[("resolved", "a")] >= 1, 90, "the resolution")
    wait_for(p, lambda: caught_up(p, notifiers.ports[1 - n_old]), 60, "the notifier done")
    assert notified(hook) == ORACLE, hook.bodies
    # the ALERTS series committed on the samples topic are the no-fault ones: firing at
    # every hot end, markers where it resolved, nothing from the fenced former holder
    # (a sample repeated by the new holder's replay from its checkpoint is the same one)
    end = lambda w: start + (w + 1) * W  # noqa: E731 - the end of window w
    expected = {
        (name, state, room, end(w), v)
        for room in "ab"
        for w in HOT
        for name, state, v in (
            ("ALERTS", "firing", 1.0),
            ("ALERTS_FOR_STATE", "", float(end(HOT[0]) // 1000)),
        )
    }
    expected |= {(name, state, room, end(HOT[-1] + 1), "stale") for room in "ab"
                 for name, state in (("ALERTS", "firing"), ("ALERTS_FOR_STATE", ""))}  # fmt: skip
    wait_for(p, lambda: set(alert_series(p)) >= expected, 60, "the ALERTS series committed")
    assert set(alert_series(p)) == expected
    # after the new holder's first state record, only the new holder's are committed
    for topic in ("alerts.state", "alerts.notifier.state"):
        records = committed(p, topic)
        holders = {r[1] for r in records}
        assert len(holders) >= 2, (topic, holders)  # written by both, in turn
        assert len(after_takeover(records)) == 1, (topic, records[-20:])


def alert_series(p: Pipeline) -> list[tuple[str, str, str, int, float | str]]:
    """(name, alertstate, room, timestamp, value or "stale") of every committed sample
    the evaluator wrote for its alerts on ``metrics.samples``."""
    from monitoring.agents.alerting import ALERTS_SOURCE
    from monitoring.metrics.samples import is_stale
    from monitoring.wire.codec import AvroCodec

    codec = AvroCodec.from_directory()
    out: list[tuple[str, str, str, int, float | str]] = []
    # librdkafka reads committed records only by default: the fenced holder's are not here
    for m in read_to_end(p.settings.kafka.bootstrap_servers, p.topic("metrics.samples")):
        rec = codec.decode(m.value()).record
        if rec.get("source") != ALERTS_SOURCE:
            continue
        labels, v = rec["labels"], rec["value"]
        out.append((rec["name"], labels.get("alertstate", ""), labels["room"],
                    rec["timestamp_ms"], "stale" if is_stale(v) else v))  # fmt: skip
    return out


def window_ends(p: Pipeline) -> set[int]:
    """Every end of an evaluation-size window on ``metrics.aggregates`` (committed)."""
    return set().union(*window_ends_by_room(p).values())


def window_ends_by_room(p: Pipeline) -> dict[str, set[int]]:
    """The ends of each room's evaluation-size windows on ``metrics.aggregates``."""
    from monitoring.wire.aggregate_encoding import AggregateDecoder
    from monitoring.wire.codec import AvroCodec

    decode = AggregateDecoder(AvroCodec.from_directory()).decode
    topic = p.topic("metrics.aggregates")
    c = Consumer(
        consumer_config(p.settings.kafka, "t-ha-windows", **{"enable.partition.eof": True})
    )
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, q, OFFSET_BEGINNING) for q in parts])
        ends: dict[str, set[int]] = {room: set() for room in "abc"}
        eof: set[int] = set()
        deadline = time.monotonic() + 30
        while len(eof) < len(parts) and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                continue
            eof.discard(m.partition())
            agg = decode(m.value())
            if agg.window_ms == W:
                ends[agg.labels["room"]].add(agg.window_end_ms)
        return ends
    finally:
        c.close()
