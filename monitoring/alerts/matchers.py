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

Every user-supplied label regex (matchers of routes, inhibition rules and silences, and
the selectors of alert rules) is compiled by ``compile_matcher_regex`` with RE2, the
engine Alertmanager and Prometheus use: matching takes time linear in the label's
length whatever the pattern, so a silence like ``(a|a)*b`` cannot stall the notifier.
RE2 has no backreferences or lookaround; such patterns are refused with
``MatcherError`` where they enter (config load, silence creation).

>>> compile_matcher_regex("(a|a)*b").matches("a" * 100)
False
>>> try:
...     parse_matcher('a=~"(?=x)"')
... except MatcherError as e:
...     print(e)  # doctest: +ELLIPSIS
invalid regex in matcher a=~"(?=x)": invalid perl operator: (?= (RE2: no lookaround...)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import re2

Op = Literal["=", "!=", "=~", "!~"]

_MATCHER = re.compile(r"^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*(.*?)\s*$", re.DOTALL)


def _regex_options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the error goes into MatcherError, not to stderr
    options.never_capture = True  # only "does it match" is asked: groups cost time
    return options


_RE2_OPTIONS = _regex_options()


class MatcherError(ValueError):
    """A matcher string or object cannot be parsed; the message quotes it."""


class LabelRegex:
    """A label regex compiled by RE2, matched against a whole value (``^(?:re)$``)."""

    __slots__ = ("_compiled", "pattern")

    def __init__(self, pattern: str, compiled: Any) -> None:
        self.pattern = pattern
        self._compiled = compiled

    def matches(self, value: str) -> bool:
        """Whether the regex matches all of ``value`` (time linear in its length)."""
        return self._compiled.fullmatch(value.encode("utf-8", "surrogatepass")) is not None

    def __repr__(self) -> str:
        return f"LabelRegex({self.pattern!r})"


def compile_matcher_regex(pattern: str, where: str = "") -> LabelRegex:
    """Compile a user-supplied label regex with RE2, anchored at both ends.

    The one place such regexes are compiled. ``MatcherError`` (a ``ValueError``) when
    RE2 refuses the pattern (bad syntax, backreferences, lookaround, a program too big);
    its message names ``where`` (e.g. ``matcher job=~"x"``), else the pattern.
    """
    try:
        compiled = re2.compile(f"(?:{pattern})", _RE2_OPTIONS)
    except (re2.error, UnicodeError) as e:
        reason = e.args[0] if e.args else e
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise MatcherError(
            f"invalid regex in {where or repr(pattern)}: {reason}"
            " (RE2: no lookaround or backreferences)"
        ) from None
    return LabelRegex(pattern, compiled)


def value_test(op: str, value: str, where: str = "") -> Callable[[str], bool]:
    """The test a label's value passes for ``op value`` (``=``, ``!=``, ``=~``, ``!~``;
    regexes anchored, RE2): the selectors of rules compile their matchers with it.
    ``MatcherError`` naming ``where`` when RE2 refuses the regex.

    >>> value_test("!~", "db.*")("web1"), value_test("=", "a")("b")
    (True, False)
    """
    if op == "=":
        return lambda v: v == value
    if op == "!=":
        return lambda v: v != value
    rx = compile_matcher_regex(value, where)
    if op == "=~":
        return rx.matches
    return lambda v: not rx.matches(v)


def _regex_match(m: Matcher, value: str) -> bool:
    assert m.regex is not None
    return m.regex.matches(value)


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


@dataclass(frozen=True)
class Matcher:
    """One label matcher; ``matches(labels)`` tests a label set."""

    name: str
    op: Op
    value: str
    regex: LabelRegex | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise MatcherError(f"unknown match operator {self.op!r}")
        if self.op in ("=~", "!~") and self.regex is None:
            compiled = compile_matcher_regex(self.value, where=f"matcher {self}")
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
