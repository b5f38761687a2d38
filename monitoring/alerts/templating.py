"""The subset of Prometheus' Go templates that rule labels and annotations may use.

Supported inside ``{{ ... }}`` (``{{-`` / ``-}}`` trim spaces as in Go):

* values: ``$labels.NAME``, ``.Labels.NAME``, ``$value``, ``.Value``, string and number
  literals;
* functions, called as ``f ARG...`` or piped as ``VALUE | f ARG...``:
  ``humanize`` (SI prefixes, 4 significant digits), ``humanizePercentage`` (x 100, ``%``),
  ``humanizeDuration`` (seconds as ``1d 2h 3m 4s``), ``printf "FORMAT" ARG...`` (verbs
  ``%v %s %d %f %e %g`` with flags, width and precision), ``toUpper``, ``toLower``,
  ``title``.

A value prints as Go prints a float64 (``85.5``, ``1e+06``); a missing label prints as
``""`` (Go prints ``<no value>``; an empty string is friendlier in a notification).
Anything else (``if``, ``range``, ``query``...) is rejected when the rule loads.

>>> t = Template.compile("{{ $labels.host }} at {{ $value | humanize }} ({{ $value }})")
>>> t.render({"host": "a"}, 123456.0)
'a at 123.5k (123456)'
>>> Template.compile("{{ printf \\"%.1f\\" $value }}%").render({}, 91.26)
'91.3%'
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

_ACTION = re.compile(r"(\s*)\{\{(-?)\s*(.*?)\s*(-?)\}\}(\s*)", re.S)


class TemplateError(ValueError):
    """A template uses something outside the supported subset or does not parse."""


def go_float(v: float) -> str:
    """A float64 as Go's ``fmt.Sprint`` prints it (``%v``: shortest, exponent from 1e+06).

    >>> [go_float(x) for x in (100.0, 85.5, 1e6, 1234567.0, 0.0001, 0.00001, -2.5)]
    ['100', '85.5', '1e+06', '1.234567e+06', '0.0001', '1e-05', '-2.5']
    """
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "0"
    sign, digits, exp = Decimal(repr(v)).normalize().as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits))
    nd = len(ds)
    dp = nd + exp
    s = "-" if sign else ""
    x = dp - 1
    if x < -4 or x >= 6:  # Go's shortest %g switches at exponent 6
        mant = ds[0] + ("." + ds[1:] if nd > 1 else "")
        return f"{s}{mant}e{'-' if x < 0 else '+'}{abs(x):02d}"
    if dp <= 0:
        return f"{s}0.{'0' * -dp}{ds}"
    if dp >= nd:
        return s + ds + "0" * (dp - nd)
    return f"{s}{ds[:dp]}.{ds[dp:]}"


def humanize(v: float) -> str:
    """Prometheus' ``humanize``: SI prefix, 4 significant digits.

    >>> humanize(1234567.0), humanize(0.00123), humanize(12.0)
    ('1.235M', '1.23m', '12')
    """
    if v == 0 or math.isnan(v) or math.isinf(v):
        return f"{v:.4g}"
    prefix = ""
    if abs(v) >= 1:
        for p in ("k", "M", "G", "T", "P", "E", "Z", "Y"):
            if abs(v) < 1000:
                break
            prefix = p
            v /= 1000
        return f"{v:.4g}{prefix}"
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(v) >= 1:
            break
        prefix = p
        v *= 1000
    return f"{v:.4g}{prefix}"


def humanize_percentage(v: float) -> str:
    """``0.1234`` -> ``12.34%``."""
    return f"{v * 100:.4g}%"


def humanize_duration(v: float) -> str:
    """Seconds as Prometheus prints them: ``1d 2h 3m 4s``, ``45.5s``, ``12ms``.

    >>> humanize_duration(93784.0), humanize_duration(45.5), humanize_duration(0.012)
    ('1d 2h 3m 4s', '45.5s', '12ms')
    """
    if math.isnan(v) or math.isinf(v):
        return f"{v:.4g}"
    if abs(v) < 1:
        if v == 0:
            return "0s"
        for unit, scale in (("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
            if abs(v * scale) >= 1 or unit == "ns":
                return f"{v * scale:.4g}{unit}"
    sign = "-" if v < 0 else ""
    whole = int(abs(v))
    days, hours = whole // 86400, whole // 3600 % 24
    minutes, seconds = whole // 60 % 60, whole % 60
    if days:
        return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
    if hours:
        return f"{sign}{hours}h {minutes}m {seconds}s"
    if minutes:
        return f"{sign}{minutes}m {seconds}s"
    return f"{abs(v) * (-1 if sign else 1):.4g}s"


_VERB = re.compile(r"%([-+ #0]*)(\d*)(?:\.(\d+))?([vsdfeg%])")


def printf(fmt: str, *args: Any) -> str:
    """Go's ``printf`` for the verbs ``%v %s %d %f %e %g``."""
    it = iter(args)

    def one(m: re.Match[str]) -> str:
        flags, width, prec, verb = m.groups()
        if verb == "%":
            return "%"
        try:
            a = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in "vs":
            text = go_float(a) if isinstance(a, float) else str(a)
            return f"%{flags}{width}s" % text
        spec = f"%{flags}{width}{'.' + prec if prec is not None else ''}{verb}"
        try:
            return spec % (int(a) if verb == "d" else float(a))
        except (TypeError, ValueError):
            return f"%!{verb}({a})"

    return _VERB.sub(one, fmt)


FUNCTIONS: dict[str, Callable[..., str]] = {
    "humanize": lambda v: humanize(_num(v)),
    "humanizePercentage": lambda v: humanize_percentage(_num(v)),
    "humanizeDuration": lambda v: humanize_duration(_num(v)),
    "printf": printf,
    "toUpper": lambda s: _str(s).upper(),
    "toLower": lambda s: _str(s).lower(),
    "title": lambda s: _str(s).title(),
}


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise TemplateError(f"expected a number, got {v!r}") from None


def _str(v: Any) -> str:
    return go_float(v) if isinstance(v, float) else str(v)


Operand = Callable[[Mapping[str, str], float], Any]


def _operand(word: str) -> Operand | None:
    if word in ("$value", ".Value"):
        return lambda labels, value: value
    for prefix in ("$labels.", ".Labels."):
        if word.startswith(prefix):
            name = word[len(prefix) :]
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise TemplateError(f"bad label name in {word!r}")
            return lambda labels, value: labels.get(name, "")
    if len(word) >= 2 and word[0] == word[-1] and word[0] in "\"'`":
        text = word[1:-1]
        return lambda labels, value: text
    try:
        num = float(word)
    except ValueError:
        return None
    return lambda labels, value: num


class _Command:
    def __init__(self, words: list[str], piped: bool, action: str) -> None:
        self.fn: Callable[..., str] | None = None
        if words and words[0] in FUNCTIONS:
            self.fn = FUNCTIONS[words[0]]
            words = words[1:]
        elif piped or len(words) != 1:
            raise TemplateError(f"unsupported template function {words[0]!r} in {{{{ {action} }}}}")
        self.args: list[Operand] = []
        for w in words:
            op = _operand(w)
            if op is None:
                raise TemplateError(f"unsupported template value {w!r} in {{{{ {action} }}}}")
            self.args.append(op)

    def run(self, labels: Mapping[str, str], value: float, piped: Any) -> Any:
        args = [a(labels, value) for a in self.args]
        if piped is not _NOTHING:
            args.append(piped)
        if self.fn is None:
            return args[0]
        return self.fn(*args)


_NOTHING = object()


class Template:
    """A compiled template: literal parts and pipelines."""

    def __init__(self, parts: list[str | list[_Command]], source: str) -> None:
        self.parts = parts
        self.source = source

    @classmethod
    def compile(cls, text: str) -> Template:
        """Check and compile ``text``; ``TemplateError`` names the unsupported part."""
        if not isinstance(text, str):
            raise TemplateError(f"a template must be a string, got {text!r}")
        parts: list[str | list[_Command]] = []
        pos = 0
        for m in _ACTION.finditer(text):
            lead, ltrim, action, rtrim, trail = m.groups()
            parts.append(text[pos : m.start()] + ("" if ltrim else lead))
            if not action.startswith("/*"):
                parts.append(_pipeline(action))
            pos = m.end()
            if not rtrim:
                parts.append(trail)
        rest = text[pos:]
        if "{{" in rest or "}}" in rest:
            raise TemplateError(f"unbalanced braces in template {text!r}")
        parts.append(rest)
        return cls([p for p in parts if p != ""], text)

    def render(self, labels: Mapping[str, str], value: float) -> str:
        """The text for one alert instance.

        An action that fails at run time (``humanize`` of a label that is not a number)
        renders as ``<error expanding template: ...>``, as Prometheus does, rather than
        failing the evaluation.
        """
        out: list[str] = []
        for p in self.parts:
            if isinstance(p, str):
                out.append(p)
                continue
            v: Any = _NOTHING
            try:
                for cmd in p:
                    v = cmd.run(labels, value, v)
            except (TemplateError, TypeError, ValueError, OverflowError) as e:
                out.append(f"<error expanding template: {e}>")
                continue
            out.append(_str(v))
        return "".join(out)


def _pipeline(action: str) -> list[_Command]:
    if not action:
        raise TemplateError("empty {{ }} in template")
    cmds = []
    for i, chunk in enumerate(_split_pipes(action)):
        try:
            words = shlex.split(chunk, posix=False)
        except ValueError as e:
            raise TemplateError(f"cannot parse {{{{ {action} }}}}: {e}") from None
        if not words:
            raise TemplateError(f"empty command in {{{{ {action} }}}}")
        cmds.append(_Command(words, i > 0, action))
    return cmds


def _split_pipes(action: str) -> list[str]:
    out, cur, quote = [], [], ""
    for ch in action:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
            cur.append(ch)
        elif ch == "|":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out
