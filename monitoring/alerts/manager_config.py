"""The alert manager's config file: Alertmanager's YAML shape plus ``escalation_policies``.

``route``, ``receivers``, ``inhibit_rules`` and ``templates`` as in Alertmanager (the
receivers' channel settings, ``email_configs``, ``slack_configs``..., are kept raw per
name for the notifiers; only names are checked here), ``global`` kept raw, and our
``escalation_policies``. Every receiver a route or tier names must exist, as must
every policy a route names. Errors raise ``ConfigError`` naming the key.

>>> cfg = ManagerConfig.from_yaml('''
... route: {receiver: team, group_by: [alertname]}
... receivers: [{name: team, webhook_configs: [{url: "http://127.0.0.1:9/hook"}]}]
... ''')
>>> cfg.receiver_configs["team"]["webhook_configs"][0]["url"]
'http://127.0.0.1:9/hook'
>>> ManagerConfig.from_yaml("route: {receiver: nobody}\\nreceivers: [{name: team}]")
Traceback (most recent call last):
...
monitoring.config.ConfigError: <string>: route.receiver: undefined receiver 'nobody'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from monitoring.alerts.escalation import EscalationPolicy, EscalationPolicyConfig
from monitoring.alerts.inhibition import InhibitRuleConfig
from monitoring.alerts.routing import RootRouteConfig, RouteConfig
from monitoring.config import ConfigError


class ManagerConfig(BaseModel):
    """The whole file; ``receiver_configs`` gives each receiver's raw mapping by name."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    global_: dict[str, Any] = Field(default_factory=dict, alias="global")
    route: RootRouteConfig
    receivers: tuple[dict[str, Any], ...] = Field(min_length=1)
    inhibit_rules: tuple[InhibitRuleConfig, ...] = ()
    templates: tuple[str, ...] = ()
    escalation_policies: tuple[EscalationPolicyConfig, ...] = ()

    @field_validator("receivers")
    @classmethod
    def _receivers_named(cls, v: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        seen: set[str] = set()
        for i, r in enumerate(v):
            name = r.get("name")
            if not isinstance(name, str) or not name:
                raise ValueError(f"entry {i} needs a non-empty 'name'")
            if name in seen:
                raise ValueError(f"entry {i}: duplicate receiver name {name!r}")
            seen.add(name)
        return v

    @field_validator("escalation_policies")
    @classmethod
    def _policies_unique(
        cls, v: tuple[EscalationPolicyConfig, ...]
    ) -> tuple[EscalationPolicyConfig, ...]:
        names = [p.name for p in v]
        dups = sorted({n for n in names if names.count(n) > 1})
        if dups:
            raise ValueError(f"duplicate escalation policy name(s): {', '.join(dups)}")
        return v

    @property
    def receiver_configs(self) -> dict[str, dict[str, Any]]:
        """Each receiver's raw mapping (``email_configs``...) by name, for the notifiers."""
        return {r["name"]: r for r in self.receivers}

    @property
    def policies(self) -> dict[str, EscalationPolicy]:
        """Escalation policies by name."""
        return {p.name: p.build() for p in self.escalation_policies}

    def references(self) -> list[str]:
        """Problems with names used but not defined, each prefixed by its key."""
        receivers = set(self.receiver_configs)
        policies = {p.name for p in self.escalation_policies}
        problems: list[str] = []

        def visit(node: RouteConfig, where: str) -> None:
            if node.receiver is not None and node.receiver not in receivers:
                problems.append(f"{where}.receiver: undefined receiver {node.receiver!r}")
            if node.escalation is not None and node.escalation not in policies:
                problems.append(
                    f"{where}.escalation: undefined escalation policy {node.escalation!r}"
                )
            for i, child in enumerate(node.routes):
                visit(child, f"{where}.routes.{i}")

        visit(self.route, "route")
        for i, p in enumerate(self.escalation_policies):
            for j, tier in enumerate(p.tiers):
                problems.extend(
                    f"escalation_policies.{i}.tiers.{j}.receivers: undefined receiver {r!r}"
                    for r in tier.receivers
                    if r not in receivers
                )
        return problems

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> ManagerConfig:
        """Parse and validate YAML text; ``ConfigError`` naming ``source`` and the key."""
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML: {e}") from None
        except RecursionError:  # PyYAML composes recursively
            raise ConfigError(f"{source}: nested too deep") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{source}: top level must be a mapping (route, receivers, ...)")
        return cls.from_dict(raw, source)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "<config>") -> ManagerConfig:
        """Validate a parsed mapping; ``ConfigError`` naming ``source`` and the key."""
        try:
            cfg = cls.model_validate(raw)
        except ValidationError as e:
            problems = "; ".join(_describe(err) for err in e.errors())
            raise ConfigError(f"{source}: {problems}") from None
        problems_list = cfg.references()
        if problems_list:
            raise ConfigError(f"{source}: {'; '.join(problems_list)}")
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> ManagerConfig:
        """Read and validate a config file."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as e:
            raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
        return cls.from_yaml(text, str(p))


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg
