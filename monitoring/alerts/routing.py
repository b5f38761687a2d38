"""The routing tree, in Alertmanager's ``route:`` shape.

``RouteConfig`` is the YAML (``receiver``, ``group_by`` incl. ``...``, ``group_wait``,
``group_interval``, ``repeat_interval``, ``matchers``, legacy ``match``/``match_re``,
``continue``, nested ``routes``, plus our ``escalation``); ``build_routes`` turns it into
``Route`` values whose settings are effective (inherited from the parent where unset).
``Route.match(labels)`` walks the tree as Alertmanager's dispatcher does: depth first,
a child that matches stops the search among its siblings unless it has ``continue``,
and a route none of whose children match is itself the match.

>>> root = build_routes(RouteConfig.model_validate(
...     {"receiver": "default", "group_by": ["alertname"],
...      "routes": [{"matchers": ['severity="critical"'], "receiver": "pager"}]}))
>>> [(r.receiver, r.key) for r in root.match({"alertname": "X", "severity": "critical"})]
[('pager', '{}/{severity="critical"}')]
>>> [r.receiver for r in root.match({"alertname": "X"})]
['default']
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from monitoring.alerts.durations import DurationMs
from monitoring.alerts.matchers import (
    Matcher,
    format_matchers,
    legacy_matchers,
    matches_all,
    parse_matchers,
)
from monitoring.metrics.prom_syntax import LABEL_NAME

DEFAULT_GROUP_WAIT_MS = 30_000
DEFAULT_GROUP_INTERVAL_MS = 300_000
DEFAULT_REPEAT_INTERVAL_MS = 4 * 3_600_000
GROUP_BY_ALL = "..."


class RouteConfig(BaseModel):
    """One node of the ``route:`` tree as written; unset fields inherit from the parent."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    receiver: str | None = None
    group_by: tuple[str, ...] | None = None
    continue_: bool = Field(False, alias="continue")
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, str] = Field(default_factory=dict)
    matchers: tuple[str, ...] = ()
    group_wait: DurationMs | None = None
    group_interval: DurationMs | None = Field(None, gt=0)
    repeat_interval: DurationMs | None = Field(None, gt=0)
    escalation: str | None = None
    routes: tuple[RouteConfig, ...] = ()

    @field_validator("matchers")
    @classmethod
    def _matchers_parse(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for text in v:
            parse_matchers(text)  # raises MatcherError (a ValueError) quoting the text
        return v

    @field_validator("match_re")
    @classmethod
    def _regexes_compile(cls, v: dict[str, str]) -> dict[str, str]:
        legacy_matchers({}, v)
        return v

    @field_validator("group_by")
    @classmethod
    def _group_by_valid(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if v is None:
            return v
        if GROUP_BY_ALL in v and len(v) > 1:
            raise ValueError("'...' (group by all labels) cannot be combined with other labels")
        for name in v:
            if name != GROUP_BY_ALL and not LABEL_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid label name")
        return v

    def all_matchers(self) -> list[Matcher]:
        """The node's matchers: ``matchers`` strings plus legacy ``match``/``match_re``."""
        out = legacy_matchers(self.match, self.match_re)
        for text in self.matchers:
            out.extend(parse_matchers(text))
        return out


class RootRouteConfig(RouteConfig):
    """The top ``route:``: needs a receiver, matches everything, has no ``continue``."""

    @model_validator(mode="after")
    def _root_rules(self) -> RootRouteConfig:
        if not self.receiver:
            raise ValueError("root route must name a receiver")
        if self.match or self.match_re or self.matchers:
            raise ValueError("root route must not have any matchers")
        if self.continue_:
            raise ValueError("root route cannot have 'continue'")
        return self


@dataclass(frozen=True)
class Route:
    """A route with effective settings; ``path`` is its position (root ``()``)."""

    path: tuple[int, ...]
    key: str
    receiver: str
    group_by: frozenset[str] | None  # None: every label ('...')
    group_wait_ms: int
    group_interval_ms: int
    repeat_interval_ms: int
    continue_: bool
    matchers: tuple[Matcher, ...]
    escalation: str | None
    routes: tuple[Route, ...]

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Routes an alert with these labels goes to, in tree order (empty: none)."""
        if not matches_all(self.matchers, labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            matched = child.match(labels)
            found.extend(matched)
            if matched and not child.continue_:
                break
        return found or [self]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The alert's labels this route groups by (only those the alert has)."""
        if self.group_by is None:
            return dict(labels)
        return {k: v for k, v in labels.items() if k in self.group_by}

    def walk(self) -> Iterator[Route]:
        """This route and every descendant, depth first."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def find(self, path: tuple[int, ...]) -> Route | None:
        """The descendant at ``path``, or None."""
        node = self
        for i in path:
            if i >= len(node.routes):
                return None
            node = node.routes[i]
        return node


def build_routes(cfg: RouteConfig, parent: Route | None = None, index: int = 0) -> Route:
    """The effective tree of ``cfg`` (the root when ``parent`` is None)."""
    matchers = tuple(cfg.all_matchers())
    if parent is None:
        path: tuple[int, ...] = ()
        key = "{}"
    else:
        path = (*parent.path, index)
        key = f"{parent.key}/{format_matchers(matchers)}"

    def inherit(value: Any, attr: str, default: Any) -> Any:
        if value is not None:
            return value
        return getattr(parent, attr) if parent is not None else default

    if cfg.group_by is None:
        group_by = parent.group_by if parent is not None else frozenset()
    else:
        group_by = None if GROUP_BY_ALL in cfg.group_by else frozenset(cfg.group_by)
    route = Route(
        path=path,
        key=key,
        receiver=inherit(cfg.receiver, "receiver", ""),
        group_by=group_by,
        group_wait_ms=inherit(cfg.group_wait, "group_wait_ms", DEFAULT_GROUP_WAIT_MS),
        group_interval_ms=inherit(
            cfg.group_interval, "group_interval_ms", DEFAULT_GROUP_INTERVAL_MS
        ),
        repeat_interval_ms=inherit(
            cfg.repeat_interval, "repeat_interval_ms", DEFAULT_REPEAT_INTERVAL_MS
        ),
        continue_=cfg.continue_,
        matchers=matchers,
        escalation=inherit(cfg.escalation, "escalation", None),
        routes=(),
    )
    children = tuple(build_routes(c, route, i) for i, c in enumerate(cfg.routes))
    return replace(route, routes=children)


def format_labels(labels: Mapping[str, str]) -> str:
    """A label set as Alertmanager prints it: ``{a="1", b="2"}``, sorted."""
    return "{" + ", ".join(f'{k}="{_quote(labels[k])}"' for k in sorted(labels)) + "}"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    """Alertmanager's aggregation group key: ``<route key>:<group labels>``."""
    return f"{route.key}:{format_labels(route.group_labels(labels))}"
