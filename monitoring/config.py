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
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
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


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def ms(d: timedelta) -> int:
    """Whole milliseconds of a timedelta."""
    return int(d.total_seconds() * 1000)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectionSettings(_Section):
    """Producer SDK: how often collectors scrape and how they batch."""

    interval: Duration = timedelta(seconds=10)
    batch_size: int = Field(500, ge=1, le=100_000)
    buffer_size: int = Field(100_000, ge=1)
    linger: Duration = timedelta(milliseconds=100)


class KafkaSettings(_Section):
    """Broker address, topic names and topic layout."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "monitoring."
    samples_partitions: int = Field(6, ge=1)
    output_partitions: int = Field(6, ge=1)
    replication_factor: int = Field(1, ge=1)
    retention: Duration = timedelta(days=7)
    dead_letter_retention: Duration = timedelta(days=14)
    max_message_bytes: int = Field(4 * 1024 * 1024, ge=1024)


class AggregationSettings(_Section):
    """Event-time tumbling windows per series."""

    windows: list[Duration] = [timedelta(seconds=10), timedelta(minutes=1)]
    allowed_lateness: Duration = timedelta(seconds=5)
    idle_timeout: Duration = timedelta(seconds=30)
    checkpoint_interval: Duration = timedelta(seconds=5)
    max_future_skew: Duration = timedelta(hours=1)
    quantile_relative_accuracy: float = Field(0.01, gt=0, lt=1)

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


class StorageSettings(_Section):
    """ClickHouse store: DSN (embedded chDB by default), batching, retention."""

    dsn: str = "chdb:///.data/chdb"
    batch_size: int = Field(50_000, ge=1)
    flush_interval: Duration = timedelta(seconds=1)
    retention: RetentionSettings = RetentionSettings()
    compression: Literal["zstd", "lz4", "none"] = "zstd"
    query_host: str = "127.0.0.1"
    query_port: int = Field(8124, ge=1, le=65535)

    @field_validator("dsn")
    @classmethod
    def _dsn_valid(cls, v: str) -> str:
        if not v.startswith(("chdb://", "http://", "https://")):
            raise ValueError("must start with chdb://, http:// or https://")
        return v


class WorkerSettings(_Section):
    metrics_port: int = Field(9310, ge=0, le=65535)


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
            if not isinstance(loaded, dict):
                raise ConfigError(f"{source}: top level must be a mapping of sections")
            data = loaded
        try:
            return cls(**data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"{where}: {problems}") from None
