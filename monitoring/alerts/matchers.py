"""Label matchers as Alertmanager 0.22+ parses and prints them.

A matcher is ``name op value`` with ``op`` one of ``=``, ``!=``, ``=~``, ``!~``; regexes
are anchored (``^(?:re)$``); a missing label matches as the empty string. The value may
be double-quoted with OpenMetrics escapes (``\\"``, ``\\\\``, ``\\n``). A list may be
written ``{a="1", b=~"x|y"}`` (braces optional, commas inside quotes kept).

>>> [str(m) for m in parse_matchers('{severity="critical", team=~"db|web"}')]
['severity="critical"', 'team=~"db|web"']
>>> parse_matcher('env!~"prod.*"').matches({"env": "staging"})
True
>>> parse_matcher('env=""').matches({})  # absent label equals the empty string
True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

Op = Literal["=", "!=", "=~", "!~"]

_MATCHER = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*$", re.DOTALL)


def _regex_match(m: Matcher, value: str) -> bool:
    assert m.regex is not None
    return m.regex.fullmatch(value) is not None


_OPS: dict[str, Callable[[Matcher, str], bool]] = {
    "=": lambda m, v: v == m.value,
    "!=": lambda m, v: v != m.value,
    "=~": _regex_match,
    "!~": lambda m, v: not _regex_match(m, v),
}
_API_FLAGS: dict[str, tuple[bool, bool]] = {  # op -> (isRegex, isEqual)
    "=": (False, True),
    "!=": (False, False),
    "=~": (True, True),
    "!~": (True, False),
}
_API_OPS = {flags: op for op, flags in _API_FLAGS.items()}


class MatcherError(ValueError):
    """A matcher string or object cannot be parsed; the message quotes it."""


@dataclass(frozen=True)
class Matcher:
    """One label matcher; ``matches(labels)`` tests a label set."""

    name: str
    op: Op
    value: str
    regex: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise MatcherError(f"unknown match operator {self.op!r}")
        if self.op in ("=~", "!~") and self.regex is None:
            try:
                compiled = re.compile(f"(?:{self.value})")
            except re.error as e:
                raise MatcherError(f"invalid regex in matcher {self}: {e}") from None
            object.__setattr__(self, "regex", compiled)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this matcher (absent label = ``""``)."""
        return _OPS[self.op](self, labels.get(self.name, ""))

    def __str__(self) -> str:
        return f'{self.name}{self.op}"{_escape(self.value)}"'

    @property
    def sort_key(self) -> tuple[str, str, int]:
        """Alertmanager's order of matchers: name, value, then operator."""
        return (self.name, self.value, list(_OPS).index(self.op))

    def to_api(self) -> dict[str, Any]:
        """Alertmanager v2 API form ``{name, value, isRegex, isEqual}``."""
        is_regex, is_equal = _API_FLAGS[self.op]
        return {"name": self.name, "value": self.value, "isRegex": is_regex, "isEqual": is_equal}

    @classmethod
    def from_api(cls, obj: Mapping[str, Any]) -> Matcher:
        """Parse the v2 API form; ``isEqual`` defaults to true as in Alertmanager."""
        name = obj.get("name")
        if not isinstance(name, str) or not _MATCHER.match(f"{name}=x"):
            raise MatcherError(f"matcher needs a valid label name, got {name!r}")
        value = obj.get("value")
        if not isinstance(value, str):
            raise MatcherError(f"matcher {name!r} needs a string value, got {value!r}")
        key = (bool(obj.get("isRegex", False)), bool(obj.get("isEqual", True)))
        return cls(name, _API_OPS[key], value)  # type: ignore[arg-type]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _unquote(raw: str, source: str) -> str:
    quoted = raw.startswith('"')
    body = raw[1:] if quoted else raw
    out: list[str] = []
    i, closed = 0, not quoted
    while i < len(body):
        c = body[i]
        if c == "\\" and i < len(body) - 1:
            nxt = body[i + 1]
            out.append({"n": "\n", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        if c == '"':
            if not quoted or i < len(body) - 1:
                raise MatcherError(f"matcher value contains an unescaped double quote: {source}")
            closed = True
        else:
            out.append(c)
        i += 1
    if not closed:
        raise MatcherError(f"matcher value contains an unescaped double quote: {source}")
    return "".join(out)


def parse_matcher(text: str) -> Matcher:
    """Parse one ``name op value`` matcher as Alertmanager's ParseMatcher does."""
    m = _MATCHER.match(text)
    if not m:
        raise MatcherError(f"bad matcher format: {text!r}")
    name, op, raw = m.groups()
    if raw == "":
        raise MatcherError(f'matcher value is not present: {text!r} (write {name}{op}"")')
    return Matcher(name, cast(Op, op), _unquote(raw, text))


def parse_matchers(text: str) -> list[Matcher]:
    """Parse ``{a="1", b!="2"}`` (braces optional) into matchers, in written order."""
    s = text.strip()
    s = s.removeprefix("{").removesuffix("}")
    tokens: list[str] = []
    token: list[str] = []
    inside, escaped = False, False
    for ch in s:
        if ch == "," and not inside:
            tokens.append("".join(token))
            token = []
            continue
        if ch == '"':
            if escaped:
                escaped = False
            else:
                inside = not inside
        elif ch == "\\":
            escaped = not escaped
        else:
            escaped = False
        token.append(ch)
    last = "".join(token).strip()
    if last:
        tokens.append(last)
    return [parse_matcher(t) for t in tokens]


def legacy_matchers(match: Mapping[str, str], match_re: Mapping[str, str]) -> list[Matcher]:
    """Matchers of the deprecated ``match`` / ``match_re`` maps (regexes shown anchored)."""
    return [Matcher(k, "=", v) for k, v in match.items()] + [
        Matcher(k, "=~", f"^(?:{v})$") for k, v in match_re.items()
    ]


def matches_all(matchers: Iterable[Matcher], labels: Mapping[str, str]) -> bool:
    """Whether every matcher matches the label set (true for no matchers)."""
    for m in matchers:  # noqa: SIM110 - a loop is faster here: the hot path of muting
        if not _OPS[m.op](m, labels.get(m.name, "")):
            return False
    return True


def format_matchers(matchers: Iterable[Matcher]) -> str:
    """``{a="1",b=~"x"}`` in Alertmanager's sorted order (as in route keys)."""
    return "{" + ",".join(str(m) for m in sorted(matchers, key=lambda m: m.sort_key)) + "}"
