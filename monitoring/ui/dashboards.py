"""Dashboards as files: the model, and the directories they are read from and saved to.

A dashboard is a YAML (or JSON) file named ``<name>.yaml``: a title, a default time
range and refresh, template variables filled from label values, and rows of panels,
each with one or more queries (PromQL or SQL). Shipped dashboards live in
``infra/dashboards``; the user's directory (``ui.dashboards_dir``) holds those created
or saved through the API, and one there overrides a shipped one of the same name.

Names are ``[a-z0-9][a-z0-9_-]*`` (at most 64): a name can never leave its directory.

>>> d = Dashboard.model_validate({"title": "T", "rows": [{"panels": [
...     {"title": "up", "queries": [{"promql": "up"}]}]}]})
>>> d.rows[0].panels[0].id, d.rows[0].panels[0].type
('r0p0', 'timeseries')
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from monitoring.config import parse_duration

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "infra" / "dashboards"
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
PANEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_FILE_BYTES = 256 * 1024
SUFFIXES = (".yaml", ".yml", ".json")

PanelType = Literal[
    "timeseries", "bar", "scatter", "stat", "gauge", "table", "heatmap", "logs", "alerts"
]
Unit = Literal[
    "none", "percent", "percentunit", "seconds", "ms", "bytes", "Bps", "reqps", "ops", "short"
]
Text = Annotated[str, Field(max_length=200)]


def _duration(v: Any) -> timedelta:
    d = parse_duration(v)
    if d <= timedelta(0):
        raise ValueError("must be greater than 0")
    return d


def _fmt(d: timedelta) -> str:
    """A duration as a dashboard writes it: ``1h``, ``30s``, ``1500ms``.

    >>> _fmt(timedelta(hours=1)), _fmt(timedelta(milliseconds=1500))
    ('1h', '1500ms')
    """
    n = round(d.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if n % size == 0:
            return f"{n // size}{unit}"
    return f"{n}ms"


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(_fmt, return_type=str, when_used="json")
]


class DashboardError(ValueError):
    """A dashboard name, file or body that is refused; the message says why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Query(_Model):
    """One query of a panel: ``promql`` or ``sql`` (exactly one).

    PromQL may use ``$var`` (a variable's value, regex-escaped: match it with ``=~``);
    SQL binds ``{var:String}`` and ``{start_ms:Int64}``, ``{end_ms:Int64}``,
    ``{step_s:UInt32}`` as server-side parameters. ``legend`` formats a series' name
    from its labels (``{{service}} {{route}}``).
    """

    promql: str = Field("", max_length=16_384)
    sql: str = Field("", max_length=16_384)
    legend: Text = ""
    instant: bool = False

    @model_validator(mode="after")
    def _one_language(self) -> Query:
        if bool(self.promql.strip()) == bool(self.sql.strip()):
            raise ValueError("a query has exactly one of promql or sql")
        return self


class Panel(_Model):
    """One chart or table; ``width`` is in twelfths of the row."""

    id: str = ""
    title: Text = ""
    description: str = Field("", max_length=1000)
    type: PanelType = "timeseries"
    queries: list[Query] = Field(min_length=1, max_length=8)
    unit: Unit = "none"
    width: int = Field(6, ge=1, le=12)
    height: int = Field(260, ge=80, le=1200)
    min_step: Duration = timedelta(seconds=1)
    stack: bool = False
    min: float | None = None
    max: float | None = None
    decimals: int | None = Field(None, ge=0, le=10)

    @field_validator("id")
    @classmethod
    def _id_valid(cls, v: str) -> str:
        if v and not PANEL_ID.fullmatch(v):
            raise ValueError("a panel id is 1 to 64 of [A-Za-z0-9_-]")
        return v


class Row(_Model):
    title: Text = ""
    panels: list[Panel] = Field(min_length=1, max_length=24)


class Variable(_Model):
    """A template variable: the values of ``label`` on the series matching ``match``
    (or the first column of ``sql``, or the fixed ``values``), or free ``text`` typed
    by the user (a search; empty by default)."""

    name: str
    label: str = ""
    match: str = Field("", max_length=1024)
    sql: str = Field("", max_length=4096)
    values: list[Annotated[str, Field(max_length=256)]] = Field([], max_length=200)
    text: bool = False
    include_all: bool = True
    default: str = Field("", max_length=256)

    @field_validator("name", "label")
    @classmethod
    def _ident(cls, v: str) -> str:
        if v and not IDENT.fullmatch(v):
            raise ValueError("names are 1 to 64 of [A-Za-z0-9_], not starting with a digit")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> Variable:
        if sum(map(bool, (self.label, self.sql.strip(), self.values, self.text))) != 1:
            raise ValueError(f"variable {self.name}: give one of label, sql, values or text")
        if self.text:
            object.__setattr__(self, "include_all", False)  # a search has no All
        return self


class Annotation(_Model):
    """Events drawn on every time series panel: ``sql`` returns a time (first column)
    and a text (second) per event within ``{start_ms}``..``{end_ms}``."""

    name: Text
    sql: str = Field(min_length=1, max_length=16_384)
    color: str = Field("#f2495c", pattern=r"^#[0-9a-fA-F]{6}$")


class TimeRange(_Model):
    """The default range: the last ``last`` up to now."""

    last: Duration = timedelta(hours=1)


class Dashboard(_Model):
    """A dashboard file's contents."""

    title: Text
    description: str = Field("", max_length=2000)
    tags: list[Annotated[str, Field(max_length=64)]] = Field([], max_length=16)
    time: TimeRange = TimeRange()
    refresh: Duration | None = None
    variables: list[Variable] = Field([], max_length=16)
    annotations: list[Annotation] = Field([], max_length=4)
    rows: list[Row] = Field(min_length=1, max_length=32)

    @model_validator(mode="after")
    def _ids(self) -> Dashboard:
        """Number panels without an id (``r<row>p<panel>``); ids and names are unique."""
        seen: set[str] = set()
        rows = []
        for i, row in enumerate(self.rows):
            panels = []
            for j, p in enumerate(row.panels):
                pid = p.id or f"r{i}p{j}"
                if pid in seen:
                    raise ValueError(f"panel id {pid!r} is used twice")
                seen.add(pid)
                panels.append(p if p.id else p.model_copy(update={"id": pid}))
            rows.append(row.model_copy(update={"panels": panels}))
        names = [v.name for v in self.variables]
        if len(set(names)) != len(names):
            raise ValueError("variable names must be unique")
        object.__setattr__(self, "rows", rows)
        return self

    def panel(self, panel_id: str) -> Panel | None:
        return next((p for p in self.panels() if p.id == panel_id), None)

    def panels(self) -> Iterator[Panel]:
        for row in self.rows:
            yield from row.panels

    def variable(self, name: str) -> Variable | None:
        return next((v for v in self.variables if v.name == name), None)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form (durations as seconds), as the API and files carry it."""
        return self.model_dump(mode="json", exclude_defaults=False)


def check_name(name: str) -> str:
    """``name`` if it is a valid dashboard name, else DashboardError.

    >>> check_name("services")
    'services'
    >>> check_name("../etc/passwd")
    Traceback (most recent call last):
    ...
    monitoring.ui.dashboards.DashboardError: a dashboard name is 1 to 64 of [a-z0-9_-], \
starting with a letter or digit
    """
    if not NAME.fullmatch(name):
        raise DashboardError(
            "a dashboard name is 1 to 64 of [a-z0-9_-], starting with a letter or digit"
        )
    return name


def parse(text: str | bytes, where: str) -> Dashboard:
    """A dashboard from YAML or JSON text (JSON is YAML); DashboardError says why not."""
    if len(text) > MAX_FILE_BYTES:
        raise DashboardError(f"{where}: over {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise DashboardError(f"{where}: not valid YAML or JSON: {str(e)[:300]}") from None
    except RecursionError:  # PyYAML composes recursively: one bad file failed every listing
        raise DashboardError(f"{where}: nested too deep") from None
    return from_data(data, where)


def from_data(data: Any, where: str) -> Dashboard:
    """A dashboard from decoded data; DashboardError names the bad keys."""
    if not isinstance(data, dict):
        raise DashboardError(f"{where}: a dashboard is a mapping")
    try:
        return Dashboard.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()[:10]
        )
        raise DashboardError(f"{where}: {problems}") from None


class DashboardStore:
    """Dashboards of the shipped directory and the user's (which wins on a name)."""

    MAX_CACHED = 256  # parsed dashboards kept, keyed by file and its mtime and size
    MAX_USER = 1000  # dashboards in the user's directory (each up to MAX_FILE_BYTES)

    def __init__(self, user_dir: str | Path, shipped_dir: str | Path | None = SHIPPED_DIR):
        self.user_dir = Path(user_dir)
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else None
        self._cache: dict[Path, tuple[tuple[int, int], Dashboard]] = {}

    def _dirs(self) -> list[Path]:
        dirs = [self.user_dir]
        if self.shipped_dir is not None:
            dirs.append(self.shipped_dir)
        return dirs

    def _file(self, name: str) -> Path | None:
        check_name(name)
        for d in self._dirs():
            for suffix in SUFFIXES:
                p = d / f"{name}{suffix}"
                if p.is_file():
                    return p
        return None

    def names(self) -> list[str]:
        """Every dashboard's name, sorted."""
        out: set[str] = set()
        for d in self._dirs():
            if d.is_dir():
                out |= {
                    p.stem for p in d.iterdir() if p.suffix in SUFFIXES and NAME.fullmatch(p.stem)
                }
        return sorted(out)

    def get(self, name: str) -> Dashboard | None:
        """The dashboard called ``name``; None if there is none (DashboardError if bad)."""
        path = self._file(name)
        if path is None:
            return None
        st = path.stat()
        if st.st_size > MAX_FILE_BYTES:
            raise DashboardError(f"{path.name}: over {MAX_FILE_BYTES} bytes")
        stamp = (st.st_mtime_ns, st.st_size)
        hit = self._cache.get(path)
        if hit is not None and hit[0] == stamp:
            return hit[1]
        dashboard = parse(path.read_bytes(), path.name)
        if len(self._cache) >= self.MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))  # the oldest entry
        self._cache[path] = (stamp, dashboard)
        return dashboard

    def listing(self) -> list[dict[str, Any]]:
        """Name, title, tags and whether it is the user's, for each readable dashboard
        (an invalid file is listed with its error)."""
        out: list[dict[str, Any]] = []
        for name in self.names():
            path = self._file(name)
            user = path is not None and path.parent == self.user_dir
            try:
                d = self.get(name)
            except DashboardError as e:
                out.append({"name": name, "title": name, "error": str(e), "user": user})
                continue
            if d is not None:
                out.append({"name": name, "title": d.title, "tags": d.tags, "user": user})
        return out

    def save(self, name: str, dashboard: Dashboard) -> Path:
        """Write ``dashboard`` as ``<user_dir>/<name>.yaml`` (atomically); returns the path."""
        check_name(name)
        self.user_dir.mkdir(parents=True, exist_ok=True)
        target = (self.user_dir / f"{name}.yaml").resolve()
        if not any((self.user_dir / f"{name}{sfx}").exists() for sfx in SUFFIXES):
            held = sum(1 for p in self.user_dir.iterdir() if p.suffix in SUFFIXES)
            if held >= self.MAX_USER:
                raise DashboardError(
                    f"the dashboards directory holds {held} dashboards, at most "
                    f"{self.MAX_USER}: change or remove one"
                )
        if target.parent != self.user_dir.resolve():  # belt and braces: NAME has no '/'
            raise DashboardError("a dashboard is saved only in the dashboards directory")
        data = dashboard.model_dump(mode="json", exclude_defaults=True)
        text = yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False, allow_unicode=True)
        fd, tmp = tempfile.mkstemp(dir=self.user_dir, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        for suffix in (".yml", ".json"):  # the saved file is the one read from now on
            (self.user_dir / f"{name}{suffix}").unlink(missing_ok=True)
        return target
