"""One settings object for every process role, loaded from YAML with env overrides.

The file is ``monitoring.yaml`` in the working directory, or the path in
``MONITORING_CONFIG``. Every key can be overridden by an environment variable with
the ``MONITORING_`` prefix and ``__`` between levels, for example
``MONITORING_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`` or
``MONITORING_STORAGE__DSN=http://localhost:8123``.

Durations are written like Prometheus durations (``500ms``, ``10s``, ``1m``, ``7d``)
and normalised once to ``timedelta``.

>>> s = Settings.load(None)
>>> s.aggregation.windows_ms
[10000, 60000]
"""

from __future__ import annotations

import os
import re
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names key and reason."""


def parse_duration(value: Any) -> timedelta:
    """Parse ``10s``, ``1m``, ``7d``, ``500ms`` (or a number of seconds) into a timedelta.

    >>> parse_duration("90s")
    datetime.timedelta(seconds=90)
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(milliseconds=float(m.group(1)) * _UNIT_MS[m.group(2)])
    raise ValueError(f"invalid duration {value!r}: use a number with ms, s, m, h, d or w")


def _positive(d: timedelta) -> timedelta:
    if d <= timedelta(0):
        raise ValueError("must be greater than 0")
    return d


def _not_negative(d: timedelta) -> timedelta:
    if d < timedelta(0):
        raise ValueError("must not be negative")
    return d


# Every duration is greater than 0 unless the field says 0 makes sense (DurationOrZero)
Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_positive)]
DurationOrZero = Annotated[
    timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)
]


def ms(d: timedelta) -> int:
    """Whole milliseconds of a timedelta."""
    return int(d.total_seconds() * 1000)


def _fmt(d: timedelta) -> str:
    """A duration as it would be written: ``10s``, ``1m``, ``1500ms``."""
    n = ms(d)
    for unit in ("w", "d", "h", "m", "s"):
        if n % _UNIT_MS[unit] == 0:
            return f"{n // _UNIT_MS[unit]}{unit}"
    return f"{n}ms"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectionSettings(_Section):
    """Producer SDK: how often collectors scrape and how they batch."""

    interval: Duration = timedelta(seconds=10)
    batch_size: int = Field(500, ge=1, le=100_000)
    buffer_size: int = Field(100_000, ge=1)
    linger: DurationOrZero = timedelta(milliseconds=100)


SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class KafkaSecurity(_Section):
    """How every Kafka client of the project authenticates and encrypts (env
    ``MONITORING_KAFKA__SECURITY__<KEY>``, e.g. ``MONITORING_KAFKA__SECURITY__PROTOCOL``).

    ``protocol``: ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``.
    SASL is SCRAM (``sasl_mechanism``) as ``username`` with ``password`` (env
    ``MONITORING_KAFKA__SECURITY__PASSWORD``) or the first line of ``password_file``.
    TLS trusts ``ssl_cafile`` (PEM; empty: the system's CAs), presents
    ``ssl_certfile``/``ssl_keyfile`` when set (mutual TLS; ``ssl_key_password`` if the
    key is encrypted) and checks the broker's name unless ``check_hostname`` is false.
    Secrets are ``SecretStr``: redacted in every dump and log. Clients are built from
    these by ``monitoring.runtime.kafka_client`` only.
    """

    protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256"] = "SCRAM-SHA-512"
    username: str = Field("", max_length=256)
    password: SecretStr = SecretStr("")
    password_file: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_key_password: SecretStr = SecretStr("")
    check_hostname: bool = True

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _complete(self) -> KafkaSecurity:
        if self.sasl:
            if not self.username:
                raise ValueError(f"protocol {self.protocol} needs a username")
            has_password = bool(self.password.get_secret_value())
            if has_password == bool(self.password_file):
                raise ValueError(
                    f"protocol {self.protocol} needs exactly one of password and password_file"
                )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together (mutual TLS)")
        if not self.tls and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(f"ssl_* files are set but protocol {self.protocol} has no TLS")
        return self


class KafkaSettings(_Section):
    """Broker address, client security, topic names and topic layout."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security: KafkaSecurity = KafkaSecurity()
    topic_prefix: str = "monitoring."
    samples_partitions: int = Field(6, ge=1)
    output_partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    retention: Duration = timedelta(days=7)
    dead_letter_retention: Duration = timedelta(days=14)
    # the status topic: a process killed for good drops out of `monitoring status`
    # after this (MONITORING_KAFKA__STATUS_RETENTION)
    status_retention: Duration = timedelta(days=1)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers_valid(cls, v: str) -> str:
        servers = v.split(",")
        if not v.strip() or any(not s.strip() or any(c.isspace() for c in s) for s in servers):
            raise ValueError(f"{v!r} is not a comma-separated list of host:port")
        return v

    @field_validator("topic_prefix")
    @classmethod
    def _prefix_valid(cls, v: str) -> str:
        if not _TOPIC_PREFIX.match(v):
            raise ValueError(
                f"{v[:80]!r} must be at most {MAX_TOPIC_PREFIX} characters of [a-zA-Z0-9._-]"
            )
        if v and v[-1] not in PREFIX_SEPARATORS:
            warnings.warn(unseparated_prefix(v), UserWarning, stacklevel=2)
        return v


PREFIX_SEPARATORS = ".-_"


def unseparated_prefix(prefix: str) -> str:
    """Why a topic prefix must end in a separator.

    >>> "'pother.metrics.samples'" in unseparated_prefix("p")
    True
    """
    return (
        f"kafka.topic_prefix {prefix!r} does not end in '.', '-' or '_': it also covers "
        f"another tenant's names that start with it ('{prefix}other.metrics.samples'): "
        "prefixed ACLs grant them, and status, lag and topic listings count them; end it "
        "with '.'"
    )


# Kafka topic names are at most 249 characters of [a-zA-Z0-9._-]; the longest role
# (runtime/topics.py) is 21, so a prefix leaves room for it and a few more
MAX_TOPIC_PREFIX = 200
_TOPIC_PREFIX = re.compile(rf"^[a-zA-Z0-9._-]{{0,{MAX_TOPIC_PREFIX}}}$")


class AggregationSettings(_Section):
    """Event-time tumbling windows per series.

    At most ``max_series`` series (``max_series_per_metric`` of one metric name) have
    open windows in one samples partition, and ``max_series_per_worker`` in every
    partition one worker holds (about 3.4 KB each: 300,000 is about 1 GB); the samples
    of a new series beyond either are dead-lettered with reason ``cardinality`` and
    counted until older series close. Series restored with a partition are kept and
    count against the worker's bound.
    """

    windows: list[Duration] = [timedelta(seconds=10), timedelta(minutes=1)]
    allowed_lateness: DurationOrZero = timedelta(seconds=5)
    idle_timeout: Duration = timedelta(seconds=30)
    checkpoint_interval: Duration = timedelta(seconds=5)
    max_future_skew: Duration = timedelta(hours=1)
    # how far a sample's event time may be ahead of its Kafka record's timestamp (when
    # the record was produced): further ahead it is dead-lettered, not allowed to move
    # its partition's watermark (deterministic on replay: the record keeps its timestamp)
    max_record_skew: Duration = timedelta(seconds=10)
    quantile_relative_accuracy: float = Field(0.01, gt=0, lt=1)
    max_series: int = Field(200_000, ge=1, description="series with open windows, per partition")
    max_series_per_metric: int = Field(50_000, ge=1, description="of one metric, per partition")
    max_series_per_worker: int = Field(
        300_000, ge=1, description="series with open windows, every partition of one worker"
    )

    @field_validator("windows")
    @classmethod
    def _windows_valid(cls, v: list[timedelta]) -> list[timedelta]:
        if not v:
            raise ValueError("at least one window size is required")
        for w in v:
            if ms(w) < 1000:
                raise ValueError(f"window {w} is shorter than 1s")
        if len(set(v)) != len(v):
            raise ValueError("window sizes must be distinct")
        return sorted(v)

    @property
    def windows_ms(self) -> list[int]:
        return [ms(w) for w in self.windows]


class RetentionSettings(_Section):
    samples: Duration = timedelta(days=7)
    aggregates: Duration = timedelta(days=30)
    logs: Duration = timedelta(days=14)
    deliveries: Duration = timedelta(days=90)


class QueryLimits(_Section):
    """What one read-only query may take (enforced by the engine): wall time, result rows
    and bytes, memory; ``concurrency`` queries run at once and ``queue`` more may wait."""

    timeout: Duration = timedelta(seconds=30)
    max_result_rows: int = Field(100_000, ge=1)
    max_result_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_memory_bytes: int = Field(2 * 1024**3, ge=1024 * 1024)
    max_sql_bytes: int = Field(64 * 1024, ge=64)
    concurrency: int = Field(1, ge=1, le=64)
    queue: int = Field(8, ge=0, le=1024)


class ApiSettings(_Section):
    """Every HTTP surface (store queries, notifier API, health and metrics).

    ``token`` (env ``MONITORING_API__TOKEN``) is required as ``Authorization: Bearer``
    on every route but ``/healthz`` when set, and must be set for any server bound off
    loopback. ``allowed_hosts`` extends the Host/Origin names accepted besides loopback
    and the bound address (DNS-rebinding protection).
    """

    token: SecretStr = SecretStr("")
    allowed_hosts: list[str] = []
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    read_timeout: Duration = timedelta(seconds=10)
    max_connections: int = Field(64, ge=1)


class StorageSettings(_Section):
    """ClickHouse store: DSN (embedded chDB by default), batching, retention.

    Users' read-only queries go to ``query_dsn`` when set (a read-only user on a
    ClickHouse server), else to ``dsn``, within the ``query`` limits.
    """

    dsn: str = "chdb:///.data/chdb"
    batch_size: int = Field(50_000, ge=1)
    flush_interval: Duration = timedelta(seconds=1)
    retention: RetentionSettings = RetentionSettings()
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    query_host: str = "127.0.0.1"
    query_port: int = Field(8124, ge=1, le=65535)
    query_dsn: str = ""
    query: QueryLimits = QueryLimits()
    # a series' row (first/last seen) is written again at most this often (event time)
    series_refresh: Duration = timedelta(minutes=1)

    @field_validator("dsn", "query_dsn")
    @classmethod
    def _dsn_valid(cls, v: str, info: ValidationInfo) -> str:
        if info.field_name == "query_dsn" and not v:
            return v
        if not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v


class WorkerSettings(_Section):
    metrics_port: int = Field(9310, ge=0, le=65535)


class HealthSettings(_Section):
    """Heartbeats, readiness and ``monitoring status`` (docs/operations.md).

    Every process publishes a heartbeat every ``heartbeat_interval`` to
    ``<prefix>status``, keyed by ``process_id`` (default ``<kind>@<host>:<pid>``); one
    older than ``stale_after`` is stale. A process is not ready while a partition it
    consumes is more than ``ready_max_lag`` records behind; ``monitoring status`` fails
    past ``max_lag`` records on any partition, and when a samples partition has not
    closed a window for ``max_close_delay``.
    """

    heartbeat_interval: Duration = timedelta(seconds=5)
    stale_after: Duration = timedelta(seconds=30)
    ready_max_lag: int = Field(10_000, ge=0)
    max_lag: int = Field(100_000, ge=0)
    max_close_delay: Duration = timedelta(minutes=5)
    process_id: str = Field("", max_length=200, pattern=r"^[^\s]*$")


class LoggingSettings(_Section):
    """The project's own log: stderr always; a file too when ``file`` is set, rotated
    ``rotation`` (``midnight``: daily, UTC; or ``H``: hourly), gzip-compressed, keeping
    ``backups`` old files.

    ``level`` is the lowest level logged; ``rotation`` also takes the platform's names
    ``daily`` (= ``midnight``) and ``hourly`` (= ``H``), and ``compression`` is another
    name for ``compress``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = "INFO"
    file: str = ""
    rotation: Annotated[
        Literal["midnight", "H"],
        BeforeValidator(lambda v: {"daily": "midnight", "hourly": "H"}.get(v, v)),
    ] = "midnight"
    backups: int = Field(14, ge=0)
    compress: bool = Field(True, alias="compression")


class LogsSettings(_Section):
    """Log agent: counter windows, idle close, checkpoints, record limits."""

    enabled: bool = True
    window: Duration = timedelta(seconds=10)
    idle_timeout: Duration = timedelta(seconds=30)
    checkpoint_interval: Duration = timedelta(seconds=5)
    max_message_bytes: int = Field(64 * 1024, ge=256)
    max_attributes: int = Field(64, ge=0)
    # templates kept per service (least recently matched evicted), and the characters
    # of a message's first line that are mined: bound the state and the series
    max_templates: int = Field(1000, ge=1)
    max_template_chars: int = Field(1000, ge=16)
    # services holding state in one logs partition; a new one beyond is dead-lettered
    # (reason cardinality) and counted
    max_services: int = Field(1000, ge=1)
    # services holding state in every logs partition one worker holds (the same policy;
    # restored services are kept and count)
    max_services_per_worker: int = Field(3000, ge=1)
    ship_own_logs: bool = False  # the worker's structlog events to the logs topic too


class DetectorRoute(_Section):
    """Detector for the metrics whose name matches ``match`` (a glob, like ``gpu_*``)."""

    match: str
    detector: str


AggregateField = Literal["mean", "last", "min", "max", "sum", "count", "p50", "p90", "p99"]


class AnomalySettings(_Section):
    """Anomaly agent: scores one field of the closed windows of one size, per series.

    ``detector`` is the default detector's name, ``detectors`` picks others per metric
    name pattern (first match wins). Points before ``warmup`` raise no anomaly events;
    a score at or above ``threshold`` is an anomaly event; unset (the default), each
    detector's own alert level, where its detections and suppression start (``robust``:
    0.36, the cross-validated decision threshold of docs/anomaly.md). Series with no point for
    ``idle_eviction`` of event time are evicted. At most ``max_series`` series of a
    partition, and ``max_series_per_worker`` of every partition one worker holds, have
    a detector (about 43 KB each from its first point: 15,000 is about 650 MB); a
    new series beyond either is not scored, and counted, until idle ones are evicted.
    Metrics in ``exclude`` (globs) are not scored; ``anomaly_score`` itself never is.
    """

    enabled: bool = True
    window: Duration = timedelta(seconds=10)
    field: AggregateField = "mean"
    detector: str = "default"
    detectors: list[DetectorRoute] = []
    warmup: int = Field(0, ge=0, description="0: the detector's own default")
    threshold: float | None = Field(
        None, gt=0, le=1, description="unset: the detector's alert level (docs/anomaly.md)"
    )
    idle_eviction: Duration = timedelta(hours=6)
    max_series: int = Field(5_000, ge=1, description="series with a detector, per partition")
    max_series_per_worker: int = Field(
        15_000, ge=1, description="series with a detector, every partition of one worker"
    )
    exclude: list[str] = []
    checkpoint_interval: Duration = timedelta(seconds=5)


class AlertingSettings(_Section):
    """Alert evaluator: rule files, the window size rules read, and when to evaluate.

    ``rules`` are Prometheus rule files or the seed's shorthand (globs allowed).
    An end time is evaluated once every live partition delivered its windows (after
    ``settle``), or ``grace`` after its first window arrived. Firing alerts are sent
    again every ``resend_interval`` of evaluation time, each valid for four intervals
    (Prometheus' ``resend_delay`` and ``endsAt``); ``watchdog`` adds the always-firing
    ``Watchdog`` rule (``monitoring/alerts/watchdog.py``); ``alert_series`` writes the
    ``ALERTS`` and ``ALERTS_FOR_STATE`` series of pending and firing alerts to the
    samples topic at each evaluation, as Prometheus's rule evaluation does.
    """

    rules: list[str] = []
    window: Duration = timedelta(seconds=10)
    lookback: Duration = timedelta(minutes=5)
    grace: Duration = timedelta(seconds=2)
    settle: DurationOrZero = timedelta(milliseconds=50)
    resend_interval: Duration = timedelta(minutes=1)
    watchdog: bool = True
    alert_series: bool = False  # ALERTS / ALERTS_FOR_STATE samples, as Prometheus writes them
    checkpoint_interval: Duration = timedelta(seconds=1)
    generator_url: str = ""
    metrics_port: int = Field(9311, ge=0, le=65535)
    # rules written in the configuration itself (the seed's shorthand, or Prometheus'
    # rule objects), loaded with the files of ``rules``; checked when settings load
    definitions: list[dict[str, Any]] = Field([], max_length=10_000)

    @field_validator("definitions")
    @classmethod
    def _definitions_load(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if v:
            from monitoring.alerts.rules import load_rule_objects

            errors = load_rule_objects(v).errors
            if errors:
                raise ValueError("; ".join(str(e) for e in errors[:10]))
        return v


class NotifierSettings(_Section):
    """Notifier: the Alertmanager-shaped config file and the HTTP API port."""

    config: str = "infra/alertmanager/monitoring-alertmanager.yml"
    api_host: str = "127.0.0.1"
    api_port: int = Field(9094, ge=0, le=65535)
    checkpoint_interval: Duration = timedelta(seconds=1)
    # active and pending silences at once (a new one beyond is refused with 400), and
    # expired ones kept (Alertmanager's --silences.max-silences)
    max_silences: int = Field(1000, ge=1)
    # the channel types ``NotificationService`` sends to when given none (the platform's
    # ``alerts.notifications.channels``); each is resolved in the ``config`` file
    channels: list[Literal["email", "slack", "pagerduty", "webhook", "alertmanager"]] = []


class HaSettings(_Section):
    """High availability of the alert evaluator and the notifier (``runtime/lease.py``):
    with ``enabled``, any number of each may run; one per duty is active (the holder of
    a Kafka group lease), the others stand by reading its state, and take over
    ``session_timeout`` (plus a rebalance) after the active one stops heartbeating.
    Env: ``MONITORING_HA__ENABLED``, ``MONITORING_HA__SESSION_TIMEOUT``,
    ``MONITORING_HA__HEARTBEAT_INTERVAL``.
    """

    enabled: bool = True
    # the broker's group.min.session.timeout.ms is 6 s by default
    session_timeout: Duration = timedelta(seconds=6)
    heartbeat_interval: Duration = timedelta(seconds=1)


class ModelMetricsSettings(_Section):
    """Model metrics agent: joins predictions with labels into model_* series.

    Pending predictions and labels wait at most ``join_horizon`` of event time and
    ``max_pending`` entries per partition; River's rolling metrics span the last
    ``rolling_window`` outcomes; ``drift_detector`` (``adwin`` or ``page_hinkley``)
    watches every feature and reports at least once per ``drift_interval``.
    """

    enabled: bool = True
    join_horizon: Duration = timedelta(hours=1)
    max_pending: int = Field(100_000, ge=1)
    # label sets (model, version, a prediction's labels) with River state; a prediction
    # of a new one beyond is dead-lettered (reason cardinality); none is ever evicted
    max_series: int = Field(1_000, ge=1, description="label sets with state, per partition")
    max_series_per_worker: int = Field(
        3_000, ge=1, description="label sets with state, every partition of one worker"
    )
    rolling_window: int = Field(1000, ge=1)
    drift_detector: Literal["adwin", "page_hinkley"] = "adwin"
    drift_interval: Duration = timedelta(seconds=5)
    checkpoint_interval: Duration = timedelta(seconds=5)


class UiSettings(_Section):
    """Dashboards web app (``monitoring ui``): where it listens, where dashboards live,
    the store it reads and what one panel query may ask of it.

    ``dashboards_dir`` holds the user's dashboards (created and saved through the API);
    ``infra/dashboards`` ships the rest. ``store_url`` is the store's query endpoint
    (default ``http://storage.query_host:storage.query_port``), reached with ``api.token``.
    Env: ``MONITORING_UI__PORT``, ``MONITORING_UI__DASHBOARDS_DIR``,
    ``MONITORING_UI__STORE_URL`` (every key as ``MONITORING_UI__<KEY>``).
    """

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=0, le=65535)
    dashboards_dir: str = ".data/dashboards"
    store_url: str = ""
    refresh: Duration = timedelta(minutes=1)
    live_poll: Duration = timedelta(seconds=2)
    max_range: Duration = timedelta(days=31)
    max_query_chars: int = Field(4096, ge=64, le=65536)
    max_series: int = Field(200, ge=1, le=10_000)
    max_rows: int = Field(5000, ge=1, le=1_000_000)
    max_response_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    store_concurrency: int = Field(4, ge=1, le=64)
    max_live_clients: int = Field(16, ge=1, le=1024)


# node_exporter 1.5's defaults (filesystem and diskstats collectors): pseudo and
# container filesystems, and partitions, RAM and loop disks, are not reported
NODE_FS_TYPES_EXCLUDE = (
    "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
    "|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs"
    "|squashfs|sysfs|tracefs)$"
)
NODE_MOUNT_POINTS_EXCLUDE = (
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
NODE_DISK_DEVICES_EXCLUDE = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"


class ProcessGroup(_Section):
    """Processes reported together as ``groupname=name`` (process-exporter's
    ``namedprocess_namegroup_*``): those whose name is in ``comm``, or whose command
    line matches the RE2 regex ``cmdline`` (searched, not anchored)."""

    name: str = Field(min_length=1, max_length=128)
    comm: list[str] = Field([], max_length=64)
    cmdline: str = Field("", max_length=1024)

    @model_validator(mode="after")
    def _matches_something(self) -> ProcessGroup:
        if not self.comm and not self.cmdline:
            raise ValueError(f"process group {self.name!r}: give comm names or a cmdline regex")
        if self.cmdline:
            import re2

            try:
                re2.compile(self.cmdline)
            except re2.error as e:
                raise ValueError(f"process group {self.name!r}: cmdline: {e}") from None
        return self


class SystemCollectorSettings(_Section):
    """System collector (``monitoring collect system``), every ``collection.interval``.

    At most ``max_series`` series per collection and ``max_devices`` cores, mounts,
    disks or interfaces per family (the rest are counted, not sent); the exclusion
    regexes (RE2) are node_exporter's defaults. ``gpu``: NVML series when a GPU and
    driver exist. ``metrics_port``: the collector's own /healthz and /metrics (0: none).
    Every series carries ``job`` and ``instance`` (default: the host name), as a
    Prometheus scraping node_exporter would add them.
    """

    job: str = Field("node", min_length=1, max_length=128)
    instance: str = Field("", max_length=256)
    processes: list[ProcessGroup] = Field([], max_length=64)
    max_series: int = Field(10_000, ge=1, le=1_000_000)
    max_devices: int = Field(256, ge=1, le=100_000)
    fs_types_exclude: str = NODE_FS_TYPES_EXCLUDE
    mount_points_exclude: str = NODE_MOUNT_POINTS_EXCLUDE
    disk_devices_exclude: str = NODE_DISK_DEVICES_EXCLUDE
    network_devices_exclude: str = ""
    gpu: bool = True
    stat_timeout: Duration = timedelta(seconds=5)
    metrics_port: int = Field(9312, ge=0, le=65535)

    @field_validator(
        "fs_types_exclude",
        "mount_points_exclude",
        "disk_devices_exclude",
        "network_devices_exclude",
    )
    @classmethod
    def _re2(cls, v: str) -> str:
        import re2

        try:
            re2.compile(v)
        except re2.error as e:
            raise ValueError(f"not an RE2 regex: {e}") from None
        return v


class ScrapeSettings(_Section):
    """Prometheus scraping (``monitoring scrape --config FILE``): the scrape configs
    are the FILE; these bound it. ``metrics_port``: its own /healthz and /metrics.
    ``max_cached_series`` and ``max_cache_bytes``: exposed series kept with their
    validated series (about 0.7 KB each), shared by the targets; a target's share is
    emptied when full. ``max_inflight_bytes``: response bodies held at once, over all
    targets (a scrape waits for room, within its timeout)."""

    max_targets: int = Field(10_000, ge=1, le=1_000_000)
    max_cached_series: int = Field(600_000, ge=1000, le=100_000_000)
    max_cache_bytes: int = Field(1024**3, ge=1024**2)
    max_inflight_bytes: int = Field(256 * 1024**2, ge=1024**2)
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_sd_file_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    metrics_port: int = Field(9313, ge=0, le=65535)


class ReceiveSettings(_Section):
    """Receivers (``monitoring receive``): Prometheus remote_write on ``/api/v1/write``
    and OTLP/HTTP metrics on ``/v1/metrics``, one server on ``host:port`` (also
    ``/healthz``, ``/metrics``), behind the ``api`` guard (token required off loopback).

    Bounds per request: ``max_body_bytes`` as received, ``max_decompressed_bytes``
    after snappy or gzip, ``max_series`` (remote_write), ``max_samples`` (samples or
    data points; at most ``collection.buffer_size``, since a request is buffered whole),
    ``max_metadata`` entries, ``max_labels`` per series. Kept state: validated series
    (``series_cache``), remote_write metric families' metadata (``max_families``), OTLP
    delta series (``max_delta_series``, idle ones forgotten after ``delta_ttl`` when
    full). A full buffer answers 503 with ``Retry-After: retry_after``. OTLP mapping:
    ``promote_resource_attributes`` are copied onto every series, ``scope_labels`` adds
    ``otel_scope_name``/``otel_scope_version``, ``target_info`` the resource's series.
    """

    host: str = "127.0.0.1"
    port: int = Field(4318, ge=0, le=65535)
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_decompressed_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_series: int = Field(50_000, ge=1)
    max_samples: int = Field(50_000, ge=1)
    max_metadata: int = Field(50_000, ge=0)
    max_labels: int = Field(32, ge=1, le=32)  # the samples contract allows 32
    series_cache: int = Field(100_000, ge=1)
    max_families: int = Field(100_000, ge=1)
    max_delta_series: int = Field(100_000, ge=1)
    delta_ttl: Duration = timedelta(hours=1)
    retry_after: Duration = timedelta(seconds=1)
    promote_resource_attributes: list[str] = []
    scope_labels: bool = True
    target_info: bool = True


class ReportEmail(_Section):
    """Where scheduled reports are mailed (the notifier's e-mail channel): ``to`` (comma
    separated; empty: no e-mail), ``from``, ``smarthost`` (``host:port``), optional AUTH
    (``auth_password``: env ``MONITORING_REPORTING__EMAIL__AUTH_PASSWORD``)."""

    to: str = ""
    from_: str = Field("monitoring@localhost", alias="from")
    smarthost: str = "127.0.0.1:25"
    hello: str = "localhost"
    auth_username: str | None = None
    auth_password: SecretStr | None = None
    require_tls: bool = True
    timeout: Duration = timedelta(seconds=30)


class ReportingSettings(_Section):
    """Scheduled reports (``monitoring report schedule``): one report per ``schedule``
    period (``daily``: each UTC day; ``weekly``: Monday to Monday, UTC; ``off``), in
    ``format`` with ``template``, written to ``out_dir`` (with the schedule's state),
    mailed to ``email.to``, announced on Slack to ``slack_receivers`` (receivers of the
    notifier's config file, ``notifier.config``, whose ``slack_configs`` get a message
    with a link: ``link_base_url`` is where people reach ``monitoring ui``, which serves
    ``out_dir``'s reports at ``/reports/<file>``), and deleted after ``retention``.
    Env: ``MONITORING_REPORTING__<KEY>``.
    """

    # YAML 1.1 reads a bare `off` as false
    schedule: Annotated[
        Literal["off", "daily", "weekly"], BeforeValidator(lambda v: "off" if v is False else v)
    ] = "off"
    format: Literal["pdf", "html"] = "pdf"
    template: str = Field("default", min_length=1, max_length=1024)
    sections: list[
        Literal["slo", "alerts", "anomalies", "logs", "models", "resources", "performance"]
    ] = []
    slo_target: float = Field(0.999, gt=0, lt=1)
    out_dir: str = ".data/reports"
    retention: Duration = timedelta(days=30)
    email: ReportEmail = ReportEmail()
    slack_receivers: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(
        [], max_length=64
    )
    link_base_url: str = Field("", max_length=2048)

    @field_validator("link_base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not v:
            return v
        # every Slack message carries the link: no credentials in it, and nothing
        # urlsplit drops or a chat client cuts the link at (whitespace, controls)
        if not v.isprintable() or " " in v:
            raise ValueError("an http(s) URL of printable characters, no spaces")
        p = urlsplit(v)
        if p.scheme not in ("http", "https") or not p.hostname or p.query or p.fragment:
            raise ValueError("an http(s) URL with a host, no query or fragment")
        if p.username is not None or p.password is not None:
            raise ValueError("an http(s) URL without user or password (it is posted to Slack)")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _link_for_slack(self) -> ReportingSettings:
        if self.slack_receivers and not self.link_base_url:
            raise ValueError("slack_receivers need link_base_url (where monitoring ui is)")
        return self


class PlotSettings(_Section):
    """Plots (``PlotGenerator``, ``monitoring plot``): the plot types allowed."""

    types: list[Literal["line", "bar", "scatter", "heatmap"]] = Field(
        ["line", "bar", "scatter", "heatmap"], min_length=1
    )


class PythonApiSettings(_Section):
    """The platform's Python API (``docs/python-api.md``): ``mode`` is ``pipeline``
    (events go to Kafka, results come from ClickHouse through the store) or ``local``
    (the same domain classes in this process). Env: ``MONITORING_PYTHON_API__MODE``."""

    mode: Literal["pipeline", "local"] = "pipeline"
    wait: Duration = timedelta(seconds=60)  # how long pipeline mode waits for results


class Settings(BaseSettings):
    """All settings. Env: ``MONITORING_<SECTION>__<KEY>``; file: ``MONITORING_CONFIG``."""

    model_config = SettingsConfigDict(
        env_prefix="MONITORING_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    collection: CollectionSettings = CollectionSettings()
    kafka: KafkaSettings = KafkaSettings()
    aggregation: AggregationSettings = AggregationSettings()
    storage: StorageSettings = StorageSettings()
    worker: WorkerSettings = WorkerSettings()
    logging: LoggingSettings = LoggingSettings()
    logs: LogsSettings = LogsSettings()
    anomaly: AnomalySettings = AnomalySettings()
    alerting: AlertingSettings = AlertingSettings()
    notifier: NotifierSettings = NotifierSettings()
    ha: HaSettings = HaSettings()
    model_metrics: ModelMetricsSettings = ModelMetricsSettings()
    api: ApiSettings = ApiSettings()
    system_collector: SystemCollectorSettings = SystemCollectorSettings()
    scrape: ScrapeSettings = ScrapeSettings()
    receive: ReceiveSettings = ReceiveSettings()
    ui: UiSettings = UiSettings()
    reporting: ReportingSettings = ReportingSettings()
    health: HealthSettings = HealthSettings()
    plots: PlotSettings = PlotSettings()
    python_api: PythonApiSettings = PythonApiSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values (the YAML file, passed as init kwargs) lose to the environment.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _windows_agree(self) -> Settings:
        """Readers of closed windows read a size the aggregation agent closes: any
        other size would be silently never evaluated (or never scored)."""
        sizes = self.aggregation.windows
        readers = [("alerting.window", self.alerting.window)]
        if self.anomaly.enabled:
            readers.append(("anomaly.window", self.anomaly.window))
        for key, w in readers:
            if w not in sizes:
                raise PydanticCustomError(
                    "window_not_aggregated",
                    "{key}: {window} is not one of aggregation.windows ({sizes})",
                    {"key": key, "window": _fmt(w), "sizes": ", ".join(map(_fmt, sizes))},
                )
        return self

    @classmethod
    def load(cls, path: str | Path | None = "monitoring.yaml") -> Settings:
        """Load ``path`` (if it exists) under env overrides; raise ConfigError naming the key."""
        env_path = os.environ.get("MONITORING_CONFIG")
        source = Path(env_path) if env_path else (Path(path) if path else None)
        data: dict[str, Any] = {}
        where = "environment"
        if source is not None and (env_path or source.exists()):
            where = str(source)
            try:
                loaded = yaml.safe_load(source.read_text()) or {}
            except FileNotFoundError as e:
                raise ConfigError(f"{source}: file not found") from e
            except yaml.YAMLError as e:
                raise ConfigError(f"{source}: not valid YAML: {e}") from e
            except RecursionError:  # PyYAML composes recursively
                raise ConfigError(f"{source}: nested too deep") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"{source}: top level must be a mapping of sections")
            if "monitoring" in loaded:  # the platform's documented shape
                from monitoring.utils.platform_config import from_platform

                loaded = from_platform(loaded, where)
            data = loaded
        try:
            return cls(**data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
                if err["loc"]
                else err["msg"]  # a check across sections names its keys itself
                for err in e.errors()
            )
            raise ConfigError(f"{where}: {problems}") from None
