"""Doctor checks against the broker: reachable and its version, topics as declared,
schema fingerprints of recent records, clock skew, credentials. Each is bounded by
``timeout_s`` and returns :class:`~monitoring.ops.checks.CheckResult` values."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    Producer,
    TopicPartition,
)
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from monitoring.config import Settings, ms
from monitoring.ops.checks import CheckResult, Status
from monitoring.runtime import topics as roles
from monitoring.runtime.admin import (
    BrokerAccessDenied,
    BrokerUnavailable,
    admin_client,
    describe_topics,
    ensure_topics,
    wait_for_broker,
)
from monitoring.runtime.kafka_client import (
    KafkaSecurityError,
    access_problem,
    client_config,
    client_security,
    faust_credentials,
)
from monitoring.runtime.outputs import consumer_config
from monitoring.runtime.topics import TopicSpec, topic_name, topic_specs
from monitoring.wire.codec import HEADER_LEN, MARKER, AvroCodec

CLOCK_TOPIC = "doctor.clock"  # LogAppendTime, one partition, an hour of retention
AVRO_ROLES = (
    roles.SAMPLES,
    roles.AGGREGATES,
    roles.LATE,
    roles.ANOMALIES,
    roles.LOGS,
    roles.LOG_STORED,
    roles.LOG_TEMPLATES,
    roles.PREDICTIONS,
    roles.MODEL_LABELS,
    roles.ALERTS,
    roles.NOTIFY_DELIVERIES,
)
SAMPLE_PER_PARTITION = 8


@dataclass(frozen=True)
class BrokerInfo:
    """What the broker check learnt (None: not reachable)."""

    brokers: int
    cluster_id: str
    controller: int
    topics: dict[str, int]


def _first_host(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port) if port.isdigit() else 9092


async def _api_versions(
    host: str, port: int, timeout_s: float, auth: Mapping[str, Any] | None = None
) -> dict[int, tuple[int, int]]:
    """ApiVersions of one broker (aiokafka's protocol classes), as Kafka's
    ``kafka-broker-api-versions.sh`` asks for them; ``auth``: aiokafka's security
    arguments (``kafka.security``)."""
    from aiokafka.conn import create_conn
    from aiokafka.protocol.admin import ApiVersionRequest

    conn = await asyncio.wait_for(
        create_conn(host, port, request_timeout_ms=int(timeout_s * 1000), **(auth or {})),
        timeout_s,
    )
    try:
        resp = await asyncio.wait_for(conn.send(ApiVersionRequest()), timeout_s)
    finally:
        conn.close()
    return {int(k): (int(lo), int(hi)) for k, lo, hi in resp.api_versions}


def kafka_release(versions: dict[int, tuple[int, int]]) -> str:
    """What the API versions say of the release: Kafka 4.0 dropped Fetch v0-v3
    (KIP-896; Produce v0-v2 stayed for librdkafka's sake, KAFKA-18659).

    >>> kafka_release({0: (0, 13), 1: (4, 18)})
    'Kafka 4.x (Produce v0-v13, Fetch v4-v18)'
    >>> kafka_release({0: (0, 11), 1: (0, 16)})
    'Kafka before 4.0 (Produce v0-v11, Fetch v0-v16)'
    """
    produce, fetch = versions.get(0, (0, 0)), versions.get(1, (0, 0))
    era = "Kafka 4.x" if fetch[0] >= 4 else "Kafka before 4.0"
    return f"{era} (Produce v{produce[0]}-v{produce[1]}, Fetch v{fetch[0]}-v{fetch[1]})"


def check_broker(settings: Settings, timeout_s: float) -> tuple[CheckResult, BrokerInfo | None]:
    """Reachable within ``timeout_s``: brokers, cluster id, controller, API versions."""
    bootstrap = settings.kafka.bootstrap_servers
    t0 = time.monotonic()
    hint = (
        f"start the broker (`monitoring broker up`) or fix kafka.bootstrap_servers "
        f"({bootstrap}); `monitoring broker logs` shows why a local one stopped"
    )
    denied: list[str] = []

    def on_error(err: KafkaError) -> None:
        problem = access_problem(settings.kafka, err)
        if problem is not None:
            denied.append(problem)

    admin = None
    try:
        setup: dict[str, Any] = {
            "socket.connection.setup.timeout.ms": int(timeout_s * 1000),
            "error_cb": on_error,
        }
        admin = admin_client(settings.kafka, True, **setup)
        md = admin.list_topics(timeout=timeout_s)
        desc = admin.describe_cluster(request_timeout=timeout_s).result(timeout=timeout_s)
        if not md.brokers:
            raise RuntimeError("no broker in the metadata")
    except Exception as e:
        if admin is not None:
            admin.poll(0)  # serves error_cb: a refusal is named, not "no broker"
        why = denied[0] if denied else str(e.args[0] if e.args else e)[:300]
        return CheckResult(
            "broker",
            Status.FAIL,
            f"no broker answers at {bootstrap}: {why}",
            hint,
            time.monotonic() - t0,
        ), None
    info = BrokerInfo(
        len(md.brokers),
        str(desc.cluster_id),
        int(desc.controller.id) if desc.controller is not None else -1,
        {n: len(t.partitions) for n, t in md.topics.items() if t.error is None},
    )
    host, port = _first_host(bootstrap)
    try:
        auth = credentials_to_aiokafka_auth(faust_credentials(settings.kafka))
        release = kafka_release(asyncio.run(_api_versions(host, port, timeout_s, auth)))
        status = Status.OK if release.startswith("Kafka 4") else Status.WARN
    except Exception as e:
        release, status = f"API versions not read: {str(e)[:200]}", Status.WARN
    detail = (
        f"{info.brokers} broker(s) at {bootstrap}, cluster {info.cluster_id}, "
        f"controller {info.controller}; {release}"
    )
    hint = "" if status is Status.OK else "the project is tested on Kafka 4.1"
    return CheckResult("broker", status, detail, hint, time.monotonic() - t0), info


def _effective(value: str | None) -> str:
    return value or "(unset)"


def topic_problems(specs: list[TopicSpec], actual: dict[str, Any]) -> list[tuple[Status, str]]:
    """Differences between declared ``specs`` and the broker's ``TopicInfo`` values:
    missing topics, fewer partitions and another cleanup policy fail; more partitions
    and other settings warn.

    >>> from monitoring.runtime.admin import TopicInfo
    >>> specs = [TopicSpec("a", 6, {"cleanup.policy": "delete", "retention.ms": "1"}),
    ...          TopicSpec("b", 1, {})]
    >>> topic_problems(specs, {"a": TopicInfo("a", 3, 1, {"cleanup.policy": "compact"})})
    [(<Status.FAIL: 'FAIL'>, 'a: 3 partitions, settings say 6'), \
(<Status.FAIL: 'FAIL'>, 'a: cleanup.policy compact, settings say delete'), \
(<Status.WARN: 'WARN'>, 'a: retention.ms (unset), settings say 1'), \
(<Status.FAIL: 'FAIL'>, 'b: missing')]
    """
    out: list[tuple[Status, str]] = []
    for s in specs:
        t = actual.get(s.name)
        if t is None:
            out.append((Status.FAIL, f"{s.name}: missing"))
            continue
        if t.partitions < s.partitions:
            out.append(
                (Status.FAIL, f"{s.name}: {t.partitions} partitions, settings say {s.partitions}")
            )
        elif t.partitions > s.partitions:
            out.append(
                (Status.WARN, f"{s.name}: {t.partitions} partitions, settings say {s.partitions}")
            )
        for k, v in s.config.items():
            have = t.config.get(k)
            if have != v:
                status = Status.FAIL if k == "cleanup.policy" else Status.WARN
                out.append((status, f"{s.name}: {k} {_effective(have)}, settings say {v}"))
    return out


def check_topics(settings: Settings, timeout_s: float) -> CheckResult:
    """Every declared topic (``runtime/topics.py``) present with its partitions and configs."""
    t0 = time.monotonic()
    specs = topic_specs(settings.kafka)
    actual = describe_topics(settings.kafka, [s.name for s in specs], timeout_s)
    problems = topic_problems(specs, actual)
    elapsed = time.monotonic() - t0
    if not problems:
        detail = f"{len(specs)} topics {settings.kafka.topic_prefix}* as configured"
        return CheckResult("topics", Status.OK, detail, elapsed_s=elapsed)
    status = Status.FAIL if any(s is Status.FAIL for s, _ in problems) else Status.WARN
    # missing topics first, then other failures, then warnings
    problems.sort(key=lambda sp: (not sp[1].endswith(": missing"), sp[0] is not Status.FAIL))
    shown = "; ".join(p for _, p in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    hint = "`monitoring broker topics create` creates missing topics and aligns configs"
    if any("partitions, settings say" in p and s is Status.FAIL for s, p in problems):
        hint += (
            "; fewer partitions than the settings: `monitoring broker topics create --grow` "
            "(remaps keys to partitions) or set kafka.*_partitions to the topic's count"
        )
    return CheckResult("topics", status, shown + more, hint, elapsed)


def check_fingerprints(
    settings: Settings, timeout_s: float, topics: dict[str, int], skews: list[int] | None = None
) -> CheckResult:
    """The schemas/ directory loads as a codec registry, and the newest records of the
    Avro topics (``SAMPLE_PER_PARTITION`` per partition) carry fingerprints it knows."""
    t0 = time.monotonic()
    try:
        codec = AvroCodec.from_directory()
    except Exception as e:
        return CheckResult(
            "schemas",
            Status.FAIL,
            f"schemas/ does not load: {str(e)[:300]}",
            "fix or restore the .avsc file named",
            time.monotonic() - t0,
        )
    known = {v.fingerprint: v for v in codec.versions()}
    names = [topic_name(settings.kafka, r) for r in AVRO_ROLES]
    names = [n for n in names if n in topics]
    samples = topic_name(settings.kafka, roles.SAMPLES)
    consumer = Consumer(
        consumer_config(
            settings.kafka,
            f"{settings.kafka.topic_prefix}doctor-{uuid.uuid4().hex[:8]}",
            **{"enable.partition.eof": True},
        )
    )
    seen = unknown = garbage = 0
    unknown_fps: dict[str, set[str]] = {}
    try:
        assign, left = [], set()
        for n in names:
            for p in range(topics[n]):
                lo, hi = consumer.get_watermark_offsets(TopicPartition(n, p), timeout=timeout_s)
                if hi > lo:
                    assign.append(TopicPartition(n, p, max(lo, hi - SAMPLE_PER_PARTITION)))
                    left.add((n, p))
        if assign:
            consumer.assign(assign)
        deadline = time.monotonic() + timeout_s
        while left and time.monotonic() < deadline:
            for m in consumer.consume(200, timeout=0.2):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        left.discard((m.topic(), m.partition()))
                    continue
                v = m.value()
                seen += 1
                if not isinstance(v, bytes) or len(v) < HEADER_LEN or v[:2] != MARKER:
                    garbage += 1
                    continue
                fp = int.from_bytes(v[2:HEADER_LEN], "little")
                if fp not in known:
                    unknown += 1
                    fps = unknown_fps.setdefault(str(m.topic()), set())
                    if len(fps) < 4:
                        fps.add(f"{fp:016x}")
                elif skews is not None and m.topic() == samples:
                    skew = event_skew_ms(codec, v, m.timestamp()[1])
                    if skew is not None:
                        skews.append(skew)
    finally:
        consumer.close()
    elapsed = time.monotonic() - t0
    base = f"{len(known)} schema versions; {seen} recent records on {len(names)} topics"
    if unknown:
        where = "; ".join(f"{t}: {', '.join(sorted(f))}" for t, f in sorted(unknown_fps.items()))
        return CheckResult(
            "schemas",
            Status.FAIL,
            f"{base}: {unknown} with unknown fingerprints ({where})",
            "a producer writes a schema version this build lacks: add its "
            "schemas/<name>.v<N>.avsc and upgrade readers (store, evaluator, worker) before "
            "writers; then `monitoring dlq replay --reason unknown-fingerprint`",
            elapsed,
        )
    if garbage:
        return CheckResult(
            "schemas",
            Status.WARN,
            f"{base}: {garbage} not Avro (dead-lettered by readers)",
            "`monitoring dlq list` shows them; find the producer writing them",
            elapsed,
        )
    return CheckResult("schemas", Status.OK, base + ", every fingerprint known", elapsed_s=elapsed)


def event_skew_ms(codec: AvroCodec, value: bytes, record_ts_ms: int) -> int | None:
    """How far a sample's (or a batch's newest) event time is ahead of its record's
    timestamp (negative: behind); None if it does not decode as a sample.

    >>> c = AvroCodec.from_directory()
    >>> v = c.encode("monitoring.MetricSample", {"name": "x", "value": 1.0, "timestamp_ms": 5000})
    >>> event_skew_ms(c, v, 2000), event_skew_ms(c, b"junk", 0)
    (3000, None)
    """
    try:
        record = codec.decode(value).record
    except Exception:
        return None
    stamps = record.get("timestamps_ms")
    if isinstance(stamps, list):
        if not stamps:
            return None
        return int(max(stamps)) - record_ts_ms
    ts = record.get("timestamp_ms")
    return int(ts) - record_ts_ms if isinstance(ts, int) else None


def producer_skew_result(skews: list[int], limit_ms: int) -> CheckResult:
    """Producers' event times against their records' timestamps on the samples topic.

    >>> producer_skew_result([100, -40_000, 200], 10_000).status.value
    'OK'
    >>> producer_skew_result([100, 12_000], 10_000).status.value
    'FAIL'
    >>> producer_skew_result([], 10_000).detail
    'no recent samples to compare'
    """
    if not skews:
        return CheckResult("producer clocks", Status.OK, "no recent samples to compare")
    ahead = max(skews)
    detail = (
        f"{len(skews)} recent samples: event time up to {ahead:+d} ms from the record's "
        f"timestamp (most behind {min(skews):+d} ms)"
    )
    hint = (
        "a producer's clock runs ahead: samples more than aggregation.max_record_skew "
        f"({limit_ms} ms) ahead of their record are dead-lettered (timestamp-in-future); "
        "synchronise its clock"
    )
    if ahead > limit_ms:
        return CheckResult("producer clocks", Status.FAIL, detail, hint)
    status = Status.WARN if ahead > limit_ms // 2 else Status.OK
    return CheckResult("producer clocks", status, detail, hint)


def clock_spec(settings: Settings) -> TopicSpec:
    """The doctor's probe topic: the broker stamps each record (LogAppendTime)."""
    return TopicSpec(
        topic_name(settings.kafka, CLOCK_TOPIC),
        1,
        {
            "message.timestamp.type": "LogAppendTime",
            "retention.ms": "3600000",
            "cleanup.policy": "delete",
        },
    )


def skew_status(skew_ms: float, uncertainty_ms: float, fail_ms: int) -> Status:
    """FAIL past ``fail_ms`` (samples would be dead-lettered), WARN past a second.

    >>> [skew_status(s, 5, 10_000).value for s in (300, -2500, 12_000)]
    ['OK', 'WARN', 'FAIL']
    """
    beyond = abs(skew_ms) - uncertainty_ms
    if beyond > fail_ms:
        return Status.FAIL
    return Status.WARN if beyond > 1000 else Status.OK


def check_clock(settings: Settings, timeout_s: float) -> CheckResult:
    """This host's clock against the broker's: one record to ``<prefix>doctor.clock``,
    whose delivery report carries the broker's log-append time."""
    t0 = time.monotonic()
    spec = clock_spec(settings)
    try:
        ensure_topics(settings, [spec], timeout=timeout_s)
    except Exception as e:
        return CheckResult(
            "clock",
            Status.WARN,
            f"probe topic {spec.name}: {str(e)[:200]}",
            "let this user create topics, or create it",
            time.monotonic() - t0,
        )
    got: list[tuple[int, int, float]] = []

    def done(err: KafkaError | None, msg: Any) -> None:
        if err is None:
            kind, ts = msg.timestamp()
            got.append((kind, ts, time.time() * 1000))

    producer = Producer(
        client_config(settings.kafka, **{"acks": "all", "linger.ms": 0, "on_delivery": done})
    )
    sent = time.time() * 1000
    producer.produce(spec.name, b"doctor", b"clock")
    producer.flush(timeout_s)
    elapsed = time.monotonic() - t0
    if not got:
        return CheckResult(
            "clock",
            Status.WARN,
            "the probe record was not acknowledged in time",
            "look at the broker check above",
            elapsed,
        )
    kind, broker_ms, back = got[0]
    if kind != TIMESTAMP_LOG_APPEND_TIME:
        return CheckResult(
            "clock",
            Status.WARN,
            f"{spec.name} does not use LogAppendTime",
            "`monitoring doctor` sets it; another tool changed it",
            elapsed,
        )
    uncertainty = (back - sent) / 2
    skew = broker_ms - (sent + back) / 2
    limit = ms(settings.aggregation.max_record_skew)
    status = skew_status(skew, uncertainty, limit)
    detail = f"broker - host = {skew:+.0f} ms (+/- {uncertainty:.0f} ms)"
    hint = (
        "synchronise clocks (chrony/systemd-timesyncd) on this host and the broker: samples "
        f"more than aggregation.max_record_skew ({limit} ms) ahead of their record's "
        "timestamp are dead-lettered"
    )
    return CheckResult("clock", status, detail, hint, elapsed)


def check_credentials(settings: Settings, broker_ok: bool, timeout_s: float = 5.0) -> CheckResult:
    """Kafka credentials work: ``kafka.security``'s files load, and the broker accepts
    the user and password and the TLS handshake (refused: FAIL naming what to check)."""
    sec = settings.kafka.security
    if sec.protocol == "PLAINTEXT":
        return CheckResult(
            "credentials", Status.OK, "none configured (PLAINTEXT: keep the broker private)"
        )
    who = sec.protocol + (f" as {sec.username!r} ({sec.sasl_mechanism})" if sec.sasl else "")
    t0 = time.monotonic()
    try:
        client_security(settings.kafka)
    except KafkaSecurityError as e:
        return CheckResult(
            "credentials", Status.FAIL, str(e), "fix the file named", time.monotonic() - t0
        )
    if broker_ok:
        return CheckResult("credentials", Status.OK, f"{who}: the broker accepted them")
    try:
        wait_for_broker(settings.kafka, timeout=timeout_s)
    except BrokerAccessDenied as e:
        hint = "fix kafka.security (user, password or password_file, ssl_cafile)"
        return CheckResult("credentials", Status.FAIL, str(e)[:500], hint, time.monotonic() - t0)
    except BrokerUnavailable:
        return CheckResult("credentials", Status.WARN, f"{who}: not verified, no broker answered")
    return CheckResult("credentials", Status.OK, f"{who}: the broker accepted them")
