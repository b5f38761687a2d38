"""Prometheus relabeling (``relabel_configs``, ``metric_relabel_configs``), as 2.42 does it.

Label sets are dicts; an empty value means the label is absent (setting one to "" deletes
it). Each step reads the label set the previous step left:

* ``replace``: the source labels' values joined by ``separator``; if the anchored regex
  matches, ``target_label`` (itself expanded) is set to the expanded ``replacement``,
  or deleted when that is empty; no match, no change.
* ``keep`` / ``drop``: the label set survives only if the joined value matches / does
  not match.
* ``hashmod``: ``target_label`` = MD5 of the joined value (last 8 bytes, big-endian)
  modulo ``modulus``.
* ``labelmap``: every label whose name matches is copied under the expanded replacement.
* ``labeldrop`` / ``labelkeep``: labels whose names match / do not match are removed.
* ``keepequal`` / ``dropequal``: the label set survives only if the joined value equals
  / differs from ``target_label``'s value.
* ``lowercase`` / ``uppercase``: ``target_label`` = the joined value, lower/upper-cased.

Expansion is Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``;
``$name`` takes the longest run of letters, digits and underscores (so ``$1x`` is the
group named ``1x``: empty); an unknown group is empty.

>>> rule = RelabelConfig(source_labels=["__address__"], regex="(.*):\\\\d+",
...                      target_label="host", replacement="${1}")
>>> process({"__address__": "db1:9100"}, [Rule(rule)])
{'__address__': 'db1:9100', 'host': 'db1'}
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import re2

from monitoring.ingest.scrape_config import RelabelConfig
from monitoring.metrics.prom_syntax import LABEL_NAME

Labels = dict[str, str]
_ON_VALUE = frozenset(
    ("replace", "keep", "drop", "hashmod", "keepequal", "dropequal", "lowercase", "uppercase")
)


class Rule:
    """A compiled relabel step."""

    __slots__ = ("action", "cfg", "regex")

    def __init__(self, cfg: RelabelConfig) -> None:
        self.cfg = cfg
        self.action = cfg.action
        self.regex: Any = re2.compile(f"^(?:{cfg.regex})$")


def compile_rules(cfgs: Sequence[RelabelConfig]) -> list[Rule]:
    return [Rule(c) for c in cfgs]


def process(labels: Mapping[str, str], rules: Sequence[Rule]) -> Labels | None:
    """Apply ``rules`` in order; None when a keep or drop step drops the label set."""
    out: Labels = {k: v for k, v in labels.items() if v != ""}
    for r in rules:
        c = r.cfg
        a = r.action
        if a in _ON_VALUE:
            val = c.separator.join(out.get(n, "") for n in c.source_labels)
            if a == "drop":
                if r.regex.search(val):
                    return None
            elif a == "keep":
                if not r.regex.search(val):
                    return None
            elif a == "replace":
                m = r.regex.search(val)
                if m is None:
                    continue
                target = expand(r.regex, m, c.target_label)
                if not LABEL_NAME.match(target):
                    out.pop(c.target_label, None)
                    continue
                value = expand(r.regex, m, c.replacement)
                if value:
                    out[target] = value
                else:
                    out.pop(target, None)
            elif a == "keepequal":
                if out.get(c.target_label, "") != val:
                    return None
            elif a == "dropequal":
                if out.get(c.target_label, "") == val:
                    return None
            elif a in ("lowercase", "uppercase"):
                v = val.lower() if a == "lowercase" else val.upper()
                if v:
                    out[c.target_label] = v
                else:
                    out.pop(c.target_label, None)
            else:  # hashmod
                digest = hashlib.md5(val.encode(), usedforsecurity=False).digest()
                out[c.target_label] = str(int.from_bytes(digest[-8:], "big") % c.modulus)
        elif a == "labelmap":
            for name, value in list(out.items()):
                m = r.regex.search(name)
                if m is not None:
                    new = expand(r.regex, m, c.replacement)
                    if new:
                        out[new] = value
        elif a == "labeldrop":
            out = {k: v for k, v in out.items() if not r.regex.search(k)}
        elif a == "labelkeep":
            out = {k: v for k, v in out.items() if r.regex.search(k)}
    return out


def expand(regex: Any, m: Any, template: str) -> str:
    """Go's ``Regexp.ExpandString`` of ``template`` with the match ``m``."""
    if "$" not in template:
        return template
    out: list[str] = []
    i, n = 0, len(template)
    while i < n:
        j = template.find("$", i)
        if j < 0:
            out.append(template[i:])
            break
        out.append(template[i:j])
        i = j + 1
        if i < n and template[i] == "$":
            out.append("$")
            i += 1
            continue
        name, i2 = _extract(template, i)
        if name is None:
            out.append("$")  # malformed: the $ stays as text
            continue
        i = i2
        out.append(_group(regex, m, name))
    return "".join(out)


def _extract(t: str, i: int) -> tuple[str | None, int]:
    n = len(t)
    brace = i < n and t[i] == "{"
    if brace:
        i += 1
    k = i
    while k < n and (t[k].isascii() and (t[k].isalnum() or t[k] == "_")):
        k += 1
    if k == i:
        return None, i
    name = t[i:k]
    if brace:
        if k >= n or t[k] != "}":
            return None, i - 1
        k += 1
    return name, k


def _group(regex: Any, m: Any, name: str) -> str:
    if name.isdigit() and (name == "0" or name[0] != "0") and len(name) < 9:
        idx = int(name)
        # the anchored wrapper adds no capturing group, so indexes are the user's
        if idx > regex.groups:
            return ""
        return m.group(idx) or ""
    if name not in regex.groupindex:
        return ""
    return m.group(name) or ""
