"""Prometheus' ``scrape_configs`` as pydantic models (a documented subset).

A file is Prometheus' own shape: ``global`` (``scrape_interval``, ``scrape_timeout``)
and ``scrape_configs``. Prometheus' other top-level sections (``rule_files``,
``alerting``, ``remote_write``, ...) may be present and are ignored (a prometheus.yml
can be reused); an unknown key anywhere else, or a known but unsupported one (another
service discovery, ``tls_config``, ``oauth2``, ``proxy_url``), is refused with its name.
``basic_auth`` and ``authorization`` (Bearer by default) are supported, secrets as
``SecretStr`` (never printed) or files re-read at every scrape. Defaults are Prometheus': a
1m interval, a 10s timeout, ``/metrics``, ``http``, ``honor_labels: false``,
``honor_timestamps: true``; the timeout may not exceed the interval.

Durations are Prometheus durations (``1m30s``, ``500ms``, ``1h``); sizes are Prometheus
sizes (``10MB``, ``512KiB``: powers of 1024, as ``units.Base2Bytes``).

>>> f = ScrapeFile.model_validate({"scrape_configs": [{"job_name": "node",
...     "static_configs": [{"targets": ["localhost:9100"]}]}]})
>>> j = f.jobs()[0]
>>> (j.job_name, j.interval_s, j.timeout_s, j.metrics_path)
('node', 60.0, 10.0, '/metrics')
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import re2
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from monitoring.config import ConfigError
from monitoring.metrics.prom_syntax import LABEL_NAME, prom_duration_ms

_SIZE = re.compile(r"^(\d+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$", re.ASCII)
_SIZE_UNIT = {"B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
IGNORED_TOP_LEVEL = frozenset(
    {"rule_files", "alerting", "remote_write", "remote_read", "storage", "tracing"}
)
MAX_JOBS = 1000
MAX_RULES = 256


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors' aliases: a few hundred bytes of nested aliases expand to
    billions of items when the result is walked (a "billion laughs")."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases (*name) are not accepted here")
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes) -> Any:
    """``yaml.safe_load`` refusing aliases."""
    return yaml.load(text, Loader=_NoAliases)


def parse_prom_duration(value: Any) -> float:
    """Prometheus' duration grammar (units y w d h m s ms, largest first) in seconds.

    >>> parse_prom_duration("1m30s"), parse_prom_duration("250ms")
    (90.0, 0.25)
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value != "0":  # a scrape interval of 0 is no interval
        ms = prom_duration_ms(value)
        if ms is not None:
            return ms / 1000
    raise ValueError(f"invalid duration {value!r}: use Prometheus' form, e.g. 15s, 1m30s")


def parse_size(value: Any) -> int:
    """A size in bytes: an integer, or ``<n><unit>`` with units B, KB, MB, GB, TB (1024s)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = _SIZE.match(value.strip())
        if m:
            return int(m.group(1)) * _SIZE_UNIT.get((m.group(2) or "B")[0], 1)
    raise ValueError(f"invalid size {value!r}: use e.g. 10MB or 512KiB")


Seconds = Annotated[float, BeforeValidator(parse_prom_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size), Field(ge=0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class StaticConfig(_Model):
    targets: list[str] = Field([], max_length=100_000)
    labels: dict[str, str] = {}

    @field_validator("labels")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if not LABEL_NAME.match(k):
                raise ValueError(f"{k!r} is not a valid label name")
        return v


class FileSDConfig(_Model):
    files: list[str] = Field(min_length=1, max_length=100)
    refresh_interval: Seconds = 300.0

    @field_validator("files")
    @classmethod
    def _patterns(cls, v: list[str]) -> list[str]:
        for f in v:
            if not f.endswith((".json", ".yml", ".yaml")):
                raise ValueError(f"{f!r}: file_sd files end in .json, .yml or .yaml")
        return v


RelabelAction = Literal[
    "replace",
    "keep",
    "drop",
    "keepequal",
    "dropequal",
    "hashmod",
    "labelmap",
    "labeldrop",
    "labelkeep",
    "lowercase",
    "uppercase",
]
_TARGETED = ("replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal")


class RelabelConfig(_Model):
    """One relabeling step (Prometheus' ``relabel_config``); the regex is RE2, anchored."""

    source_labels: list[str] = []
    separator: str = ";"
    target_label: str = ""
    regex: str = "(.*)"
    modulus: int = Field(0, ge=0)
    replacement: str = "$1"
    action: RelabelAction = "replace"

    @model_validator(mode="after")
    def _check(self) -> RelabelConfig:
        try:
            re2.compile(f"^(?:{self.regex})$")
        except re2.error as e:
            raise ValueError(f"regex {self.regex!r} is not RE2: {e}") from None
        a = self.action
        if a in _TARGETED and not self.target_label:
            raise ValueError(f"relabel action {a} needs a target_label")
        if a in ("lowercase", "uppercase", "keepequal", "dropequal") and not LABEL_NAME.match(
            self.target_label
        ):
            raise ValueError(f"{self.target_label!r} is not a valid label name")
        if a in ("keepequal", "dropequal") and (
            self.regex != "(.*)"
            or self.modulus
            or self.separator != ";"
            or self.replacement != "$1"
        ):
            raise ValueError(f"relabel action {a} takes only source_labels and target_label")
        if a == "hashmod" and not self.modulus:
            raise ValueError("relabel action hashmod needs a modulus")
        if (
            a in ("replace", "hashmod")
            and "$" not in self.target_label
            and not LABEL_NAME.match(self.target_label)
        ):
            raise ValueError(f"{self.target_label!r} is not a valid label name")
        if a in ("labeldrop", "labelkeep") and (
            self.source_labels
            or self.target_label
            or self.modulus
            or self.separator != ";"
            or self.replacement != "$1"
        ):
            raise ValueError(f"relabel action {a} takes only a regex")
        for name in self.source_labels:
            if not LABEL_NAME.match(name):
                raise ValueError(f"source label {name!r} is not a valid label name")
        return self


MAX_SECRET_FILE_BYTES = 64 * 1024


def _read_secret(path: str) -> str:
    """A credentials or password file, re-read at every scrape (as Prometheus does)."""
    with open(path, "rb") as f:
        data = f.read(MAX_SECRET_FILE_BYTES + 1)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_SECRET_FILE_BYTES} bytes")
    return data.decode("utf-8").strip()


class BasicAuth(_Model):
    username: str = Field(min_length=1, max_length=1024)
    password: SecretStr = SecretStr("")
    password_file: str = ""

    @model_validator(mode="after")
    def _one_password(self) -> BasicAuth:
        if self.password.get_secret_value() and self.password_file:
            raise ValueError("basic_auth: give password or password_file, not both")
        return self

    def header(self) -> str:
        pw = _read_secret(self.password_file) if self.password_file else None
        secret = pw if pw is not None else self.password.get_secret_value()
        token = base64.b64encode(f"{self.username}:{secret}".encode()).decode()
        return f"Basic {token}"


class Authorization(_Model):
    type: str = Field("Bearer", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    credentials: SecretStr = SecretStr("")
    credentials_file: str = ""

    @model_validator(mode="after")
    def _one_credential(self) -> Authorization:
        if self.type.lower() == "basic":
            raise ValueError("authorization type Basic: use basic_auth")
        if bool(self.credentials.get_secret_value()) == bool(self.credentials_file):
            raise ValueError("authorization: give credentials or credentials_file (one)")
        return self

    def header(self) -> str:
        if self.credentials_file:
            return f"{self.type} {_read_secret(self.credentials_file)}"
        return f"{self.type} {self.credentials.get_secret_value()}"


class GlobalConfig(_Model):
    scrape_interval: Seconds = 60.0
    scrape_timeout: Seconds = 10.0
    # accepted from a prometheus.yml and not used by the scraper
    evaluation_interval: Seconds | None = None
    external_labels: dict[str, str] = {}


class ScrapeConfig(_Model):
    """One job. ``sample_limit`` 0 is no limit (Prometheus'); ``body_size_limit`` 0 is
    the scraper's own cap (``scrape.max_body_bytes``)."""

    job_name: str = Field(min_length=1, max_length=256)
    scrape_interval: Seconds | None = None
    scrape_timeout: Seconds | None = None
    metrics_path: str = Field("/metrics", max_length=2048)
    scheme: Literal["http", "https"] = "http"
    params: dict[str, list[str]] = {}
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: int = Field(0, ge=0)
    body_size_limit: Size = 0
    basic_auth: BasicAuth | None = None
    authorization: Authorization | None = None
    static_configs: list[StaticConfig] = Field([], max_length=10_000)
    file_sd_configs: list[FileSDConfig] = Field([], max_length=100)
    relabel_configs: list[RelabelConfig] = Field([], max_length=MAX_RULES)
    metric_relabel_configs: list[RelabelConfig] = Field([], max_length=MAX_RULES)

    # filled from the global section by ScrapeFile
    interval_s: float = 0.0
    timeout_s: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _unsupported(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields) - {"interval_s", "timeout_s"}
            extra = sorted(k for k in data if k not in known)
            if extra:
                raise ValueError(
                    f"job {data.get('job_name')!r}: not supported here: {', '.join(extra)} "
                    "(see docs/ingest.md for the subset)"
                )
        return data

    @model_validator(mode="after")
    def _one_auth(self) -> ScrapeConfig:
        if self.basic_auth is not None and self.authorization is not None:
            raise ValueError(f"job {self.job_name!r}: basic_auth and authorization both given")
        return self

    def auth_header(self) -> str | None:
        """The Authorization header of this job's scrapes (files read now), or None."""
        auth = self.basic_auth or self.authorization
        return auth.header() if auth is not None else None

    @field_validator("metrics_path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"{v!r} must start with /")
        return v


class ScrapeFile(_Model):
    """A Prometheus configuration file, as far as scraping goes."""

    global_: GlobalConfig = Field(GlobalConfig(), alias="global")
    scrape_configs: list[ScrapeConfig] = Field([], max_length=MAX_JOBS)

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in IGNORED_TOP_LEVEL}
        return data

    @model_validator(mode="after")
    def _resolve(self) -> ScrapeFile:
        names = [j.job_name for j in self.scrape_configs]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"job_name repeated: {', '.join(dup)}")
        g = self.global_
        if g.scrape_timeout > g.scrape_interval:
            raise ValueError("global: scrape_timeout is greater than scrape_interval")
        resolved = []
        for j in self.scrape_configs:
            interval = j.scrape_interval or g.scrape_interval
            # Prometheus: an unset timeout is the global one, cut to the job's interval
            timeout = j.scrape_timeout or min(g.scrape_timeout, interval)
            if timeout > interval:
                raise ValueError(
                    f"job {j.job_name!r}: scrape_timeout {timeout:g}s is greater than "
                    f"scrape_interval {interval:g}s"
                )
            resolved.append(j.model_copy(update={"interval_s": interval, "timeout_s": timeout}))
        object.__setattr__(self, "scrape_configs", resolved)
        return self

    def jobs(self) -> list[ScrapeConfig]:
        return list(self.scrape_configs)

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = 16 * 1024 * 1024) -> ScrapeFile:
        """Read and validate a file; ConfigError naming the key and the reason."""
        p = Path(path)
        try:
            if p.stat().st_size > max_bytes:
                raise ConfigError(f"{p}: larger than {max_bytes} bytes")
            data = load_yaml(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"{p}: {e.strerror or e}") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping")
        return cls.parse(data, str(p))

    @classmethod
    def parse(cls, data: dict[str, Any], where: str = "scrape config") -> ScrapeFile:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}"
                if err["loc"]
                else err["msg"]
                for err in e.errors()
            )
            raise ConfigError(f"{where}: {problems}") from None
