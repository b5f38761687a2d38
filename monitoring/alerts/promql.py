"""A PromQL subset evaluated over closed windows (``WindowHistory``).

Expressions are parsed by promql-parser; ``compile_expr`` checks the AST against the
subset below once, at load time, and builds a tree of evaluation nodes, so an
evaluation never parses. Anything else is rejected with ``UnsupportedExpression``
naming the construct.

Data model. Each series holds closed windows of ONE size (10 s by default) with
count, sum, min, max, last and p50/p90/p99. An evaluation at time ``T`` (a window
close) sees, per series, the windows ending at or before ``T``.

* Instant selector ``m{l="v", l2=~"re", l3!="x", l4!~"re"}``: per matching series,
  the ``last`` of its newest window ending in ``(T - lookback, T]`` (lookback 5 m, as
  Prometheus' staleness lookback). Regexes are anchored (``fullmatch``); a missing
  label matches as ``""``. The output keeps ``__name__``.
* Range ``[d]``: the windows whose end lies in ``(T - d, T]``; so ``[1m]`` over 10 s
  windows is six windows, the samples of the last minute.

  - ``avg_over_time`` (sum of sums / sum of counts), ``sum_over_time``,
    ``count_over_time``, ``min_over_time``, ``max_over_time``: exact, as over the raw
    samples. ``last_over_time``: the newest window's ``last``.
  - ``quantile_over_time(q, m[d])``: each window's distribution is linear between its
    knots (min, p50, p90, p99, max at ranks 0, .5, .9, .99, 1), windows are mixed by
    count and the smallest value whose mixed CDF reaches ``q`` is returned. Exact for
    q = 0 / 1; for one window and q = .5 / .9 / .99 it is the window's percentile
    (rank ``floor(q (n-1))``, DDSketch 1 % above 256 values). Otherwise the result
    lies between the smallest and the largest window knot bracketing ``q``, and the
    true quantile of the pooled samples between the windows' own q-quantiles (each
    inside its window's bracket, give or take one sample rank in small windows): the
    error is at most the spread of those knots across the range's windows.
  - ``rate`` / ``increase`` (counters): boundary rule: they read the windows ending
    in ``[T - d, T]``, one more than the other functions, so with aligned windows
    ``increase(c[1m])`` is ``last(T) - last(T - 1m)``: the change over exactly ``d``,
    no extrapolation. Each window after the first adds its own ``increase`` field
    (Aggregate v2: the counter's increase from the previous window's last sample
    through its own samples, a drop counting from 0, so resets inside a window are
    exact). A window without it (written by Aggregate v1, or every sample out of
    order) is inferred from the pair instead: ``cur.last - prev.last``, or, when
    ``cur.min < prev.last`` (a reset inside or before that window), ``cur.last``
    (what it gained before the reset is not visible then). ``rate`` divides by the span
    between the first and last window end (``d`` once the series has that much
    history). Both need two windows; a younger series has no output.
  - ``deriv`` / ``predict_linear(m[d], t)``: least squares through the windows'
    ``(end, last)`` points in ``(T - d, T]``, as Prometheus over samples (slope per
    second; ``predict_linear`` is the line's value ``t`` seconds after ``T``). Need two
    windows.
  - ``vector(s)``: the number ``s`` as one element without labels.
  - ``absent(v)``: ``1`` with the selector's equality-matcher labels when ``v`` is empty,
    else nothing; ``absent_over_time(m[d])``: the same when no matching series has a
    window in ``(T - d, T]``.

* Functions drop ``__name__`` (except ``last_over_time``), as Prometheus does.
* Operators: ``+ - * / % ^`` and ``== != > < >= <=`` (with ``bool``: 0/1 and no
  filtering) between scalars, vector and scalar, and two vectors with one-to-one
  matching (all labels but ``__name__``, or ``on(...)`` / ``ignoring(...)``; the result
  keeps the left side's labels, only the ``on`` labels or without the ``ignoring``
  ones; arithmetic and ``bool`` drop ``__name__``); a label set matched twice on one
  side is an evaluation error, as in Prometheus. ``and``, ``or``, ``unless`` with
  ``on``/``ignoring``. Unary minus, parentheses, number literals. Division by zero
  gives ``±Inf``/``NaN`` as Go does.
* Aggregations ``sum``, ``avg``, ``min``, ``max``, ``count`` with ``by`` / ``without``.

Outside the subset (``compile_expr`` raises ``UnsupportedExpression``): ``offset``,
``@``, subqueries, ``group_left`` / ``group_right``, string literals, other functions
and aggregations (``histogram_quantile``, ``topk``, ``label_replace``...). Rules with
those run on ``monitoring.promql`` over the windows instead (``sample_rules.py``).

>>> from monitoring.alerts.history import WindowHistory, WindowRow
>>> h = WindowHistory(10_000, 60_000)
>>> _ = h.add(WindowRow.of("cpu", {"host": "a"}, 10_000, [50.0, 90.0]))
>>> _ = h.add(WindowRow.of("cpu", {"host": "b"}, 10_000, [20.0]))
>>> compile_expr('cpu > 80').evaluate(h, 10_000)
[((('__name__', 'cpu'), ('host', 'a')), 90.0)]
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import promql_parser as pp

from monitoring.alerts.functions import RANGE_FUNCTIONS, RangeFunction
from monitoring.alerts.history import NAME, Labels, Series, WindowHistory
from monitoring.alerts.matchers import MatcherError, value_test

Vector = list[tuple[Labels, float]]
Value = float | Vector


class UnsupportedExpression(ValueError):
    """The expression does not parse or is outside the supported subset."""


class EvalError(RuntimeError):
    """An expression failed at evaluation time (e.g. duplicate matches in one-to-one)."""


class Context:
    """One evaluation: the history, the time and per-evaluation caches."""

    __slots__ = ("history", "lookback_ms", "matches", "results", "t_ms")

    def __init__(
        self,
        history: WindowHistory,
        t_ms: int,
        matches: dict[str, tuple[int, list[Series]]] | None = None,
    ) -> None:
        self.history = history
        self.t_ms = t_ms
        self.lookback_ms = history.lookback_ms
        self.results: dict[str, Any] = {}
        """Results of sub-expressions by their canonical text: rules share them."""
        self.matches = {} if matches is None else matches
        """Selector matches kept across evaluations, keyed on the selector text."""


class Node:
    """A compiled expression node.

    ``key`` is the node's canonical PromQL text (set by the compiler for vector
    nodes): within one evaluation a sub-expression is computed once and the result
    (never mutated) is shared by every rule that contains it.
    """

    is_scalar = False
    key: str | None = None

    def eval(self, ctx: Context) -> Any:
        """Evaluate at ``ctx.t_ms``: a float for scalars, a ``Vector`` otherwise."""
        raise NotImplementedError

    def value(self, ctx: Context) -> Any:
        """``eval`` through the per-evaluation cache."""
        k = self.key
        if k is None:
            return self.eval(ctx)
        hit = ctx.results.get(k)
        if hit is None:
            hit = self.eval(ctx)
            ctx.results[k] = hit
        return hit


def _drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != NAME)


class Number(Node):
    is_scalar = True

    def __init__(self, number: float) -> None:
        self.number = number

    def eval(self, ctx: Context) -> float:
        return self.number


_MATCH_OPS = {  # MatchOp is not hashable: key on its text
    "MatchOp.Equal": "=",
    "MatchOp.NotEqual": "!=",
    "MatchOp.Re": "=~",
    "MatchOp.NotRe": "!~",
}


class Selector(Node):
    """An instant vector selector; also the series part of a range selector."""

    def __init__(self, vs: Any) -> None:
        if vs.offset is not None:
            raise UnsupportedExpression(f"'offset' is not supported (in {vs})")
        if vs.at is not None:
            raise UnsupportedExpression(f"the '@' modifier is not supported (in {vs})")
        self.name: str | None = vs.name
        self.text = str(vs)
        self.equal: list[tuple[str, str]] = []
        self.tests: list[tuple[str, Callable[[str], bool]]] = []
        for m in vs.matchers.matchers:
            op = _MATCH_OPS[str(m.op)]
            if op == "=" and m.name == NAME and self.name is None:
                self.name = m.value
                continue
            if op == "=":
                self.equal.append((m.name, m.value))
            self.tests.append((m.name, _matcher(op, m.value, self.text)))
        if vs.matchers.or_matchers:
            raise UnsupportedExpression(f"'or' inside label matchers is not supported ({vs})")

    def select(self, ctx: Context) -> list[Series]:
        """The series that match (cached until a series of the metric appears or goes)."""
        return ctx.history.matching(self.name, self.equal, self.tests, self.text, ctx.matches)

    def eval(self, ctx: Context) -> Vector:
        t, lookback = ctx.t_ms, ctx.lookback_ms
        out: Vector = []
        for s in self.select(ctx):
            rows = s.rows
            row = rows[-1]
            if row.end_ms > t:  # replay: newer windows than T are stored
                row = s.at(t, lookback)  # type: ignore[assignment]
                if row is None:
                    continue
            elif row.end_ms <= t - lookback:
                continue
            out.append((s.labels_key, row.last))
        return out


def _matcher(op: str, value: str, where: str) -> Callable[[str], bool]:
    try:
        return value_test(op, value, where=f"{value!r} in {where}")  # RE2: linear time
    except MatcherError as e:
        raise UnsupportedExpression(str(e)) from None


class RangeCall(Node):
    """``f(m[d])`` (optionally with a scalar parameter) for a registered range function."""

    def __init__(self, fn: RangeFunction, sel: Selector, range_ms: int, param: Node | None):
        self.fn, self.sel, self.range_ms, self.param = fn, sel, range_ms, param

    def eval(self, ctx: Context) -> Vector:
        t = ctx.t_ms
        start = t - self.range_ms
        fn = self.fn
        closed = fn.closed_start
        extra: tuple[float, ...] = ()
        if self.param is not None:
            extra = (self.param.value(ctx),)
        out: Vector = []
        for s in self.sel.select(ctx):
            rows = s.range(start, t, closed_start=closed)
            if not rows:
                continue
            v = fn.fn(rows, t, *extra)
            if v is None:
                continue
            out.append((s.labels_key if fn.keeps_name else s.labels_key_noname, v))
        return out


class Absent(Node):
    """``absent(v)`` and ``absent_over_time(m[d])``."""

    def __init__(self, inner: Node, labels: Labels, sel: Selector | None, range_ms: int | None):
        self.inner, self.labels, self.sel, self.range_ms = inner, labels, sel, range_ms

    def eval(self, ctx: Context) -> Vector:
        if self.sel is not None and self.range_ms is not None:
            start = ctx.t_ms - self.range_ms
            present = any(s.range(start, ctx.t_ms) for s in self.sel.select(ctx))
        else:
            present = bool(self.inner.value(ctx))
        return [] if present else [(self.labels, 1.0)]


class VectorOf(Node):
    """``vector(s)``: one element without labels (``vector(1)`` is the Watchdog's rule)."""

    def __init__(self, inner: Node) -> None:
        self.inner = inner

    def eval(self, ctx: Context) -> Vector:
        return [((), float(self.inner.value(ctx)))]


def _absent_labels(node: Node) -> Labels:
    if isinstance(node, Selector):
        seen: dict[str, str] = {}
        dup: set[str] = set()
        for k, v in node.equal:
            if k in seen:
                dup.add(k)
            seen[k] = v
        return tuple(sorted((k, v) for k, v in seen.items() if k not in dup and k != NAME))
    return ()


class Negate(Node):
    def __init__(self, inner: Node) -> None:
        self.inner = inner
        self.is_scalar = inner.is_scalar

    def eval(self, ctx: Context) -> Value:
        v = self.inner.value(ctx)
        if self.is_scalar:
            return -v
        return [(_drop_name(labels), -x) for labels, x in v]


def _div(a: float, b: float) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        if a == 0 or a != a:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def _mod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:
        return math.nan


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except ValueError:
        return math.nan
    except OverflowError:
        return math.inf


ARITHMETIC: dict[str, Callable[[float, float], float]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": _div,
    "%": _mod,
    "^": _pow,
}
COMPARISON: dict[str, Callable[[float, float], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}
SET_OPS = ("and", "or", "unless")
# The hot path of threshold rules, `vector OP scalar` filtering, without a call per element
_FILTERS: dict[str, Callable[[Vector, float], Vector]] = {
    "==": lambda vec, c: [e for e in vec if e[1] == c],
    "!=": lambda vec, c: [e for e in vec if e[1] != c],
    ">": lambda vec, c: [e for e in vec if e[1] > c],
    "<": lambda vec, c: [e for e in vec if e[1] < c],
    ">=": lambda vec, c: [e for e in vec if e[1] >= c],
    "<=": lambda vec, c: [e for e in vec if e[1] <= c],
}
_SWAPPED = {"==": "==", "!=": "!=", ">": "<", "<": ">", ">=": "<=", "<=": ">="}


class Matching:
    """How two vectors' elements are paired: a signature function and the result labels."""

    def __init__(self, on: bool, names: list[str]) -> None:
        self.on = on
        self.names = frozenset(names)

    def signature(self, labels: Labels) -> Labels:
        if self.on:
            return tuple(p for p in labels if p[0] in self.names)
        names = self.names
        return tuple(p for p in labels if p[0] != NAME and p[0] not in names)

    def result(self, labels: Labels, drop_name: bool) -> Labels:
        if self.on:
            return tuple(p for p in labels if p[0] in self.names)
        names = self.names
        return tuple(p for p in labels if p[0] not in names and not (drop_name and p[0] == NAME))


class Binary(Node):
    """Arithmetic, comparison and set operators."""

    def __init__(self, op: str, lhs: Node, rhs: Node, bool_: bool, matching: Matching) -> None:
        self.op, self.lhs, self.rhs, self.bool, self.matching = op, lhs, rhs, bool_, matching
        self.is_scalar = lhs.is_scalar and rhs.is_scalar
        self.arith = ARITHMETIC.get(op)
        self.cmp = COMPARISON.get(op)

    def eval(self, ctx: Context) -> Value:
        op = self.op
        if op in SET_OPS:
            return self._set(self.lhs.value(ctx), self.rhs.value(ctx))
        a, b = self.lhs.value(ctx), self.rhs.value(ctx)
        if self.is_scalar:
            if self.arith is not None:
                return self.arith(a, b)
            return 1.0 if self.cmp(a, b) else 0.0  # type: ignore[misc]
        if self.lhs.is_scalar:
            return self._vector_scalar(b, a, swap=True)
        if self.rhs.is_scalar:
            return self._vector_scalar(a, b, swap=False)
        return self._vector_vector(a, b)

    def _vector_scalar(self, vec: Vector, c: float, swap: bool) -> Vector:
        if self.arith is not None:
            f = self.arith
            if swap:
                return [(_drop_name(lab), f(c, v)) for lab, v in vec]
            return [(_drop_name(lab), f(v, c)) for lab, v in vec]
        cmp = self.cmp
        assert cmp is not None
        if self.bool:
            if swap:
                return [(_drop_name(lab), 1.0 if cmp(c, v) else 0.0) for lab, v in vec]
            return [(_drop_name(lab), 1.0 if cmp(v, c) else 0.0) for lab, v in vec]
        return _FILTERS[_SWAPPED[self.op] if swap else self.op](vec, c)

    def _vector_vector(self, a: Vector, b: Vector) -> Vector:
        m = self.matching
        right: dict[Labels, float] = {}
        for lab, v in b:
            sig = m.signature(lab)
            if sig in right:
                raise EvalError(
                    f"{self.op}: many-to-many matching not allowed: the right side has "
                    f"two series for {dict(sig)}"
                )
            right[sig] = v
        out: Vector = []
        seen: set[Labels] = set()
        drop = self.arith is not None or self.bool
        for lab, v in a:
            sig = m.signature(lab)
            w = right.get(sig)
            if w is None:
                continue
            if sig in seen:
                raise EvalError(
                    f"{self.op}: many-to-many matching not allowed: the left side has "
                    f"two series for {dict(sig)}"
                )
            seen.add(sig)
            if self.arith is not None:
                out.append((m.result(lab, True), self.arith(v, w)))
                continue
            ok = self.cmp(v, w)  # type: ignore[misc]
            if self.bool:
                out.append((m.result(lab, drop), 1.0 if ok else 0.0))
            elif ok:
                out.append((m.result(lab, False), v))
        return out

    def _set(self, a: Vector, b: Vector) -> Vector:
        sig = self.matching.signature
        if self.op == "or":
            left = {sig(lab) for lab, _ in a}
            return a + [(lab, v) for lab, v in b if sig(lab) not in left]
        right = {sig(lab) for lab, _ in b}
        if self.op == "and":
            return [(lab, v) for lab, v in a if sig(lab) in right]
        return [(lab, v) for lab, v in a if sig(lab) not in right]


class Aggregate(Node):
    """``sum/avg/min/max/count [by|without (...)] (v)``."""

    def __init__(self, op: str, inner: Node, by: bool, names: list[str]) -> None:
        self.op, self.inner, self.by, self.names = op, inner, by, frozenset(names)

    def _group(self, labels: Labels) -> Labels:
        if self.by:
            return tuple(p for p in labels if p[0] in self.names)
        return tuple(p for p in labels if p[0] != NAME and p[0] not in self.names)

    def eval(self, ctx: Context) -> Vector:
        groups: dict[Labels, list[float]] = {}
        for lab, v in self.inner.value(ctx):
            g = self._group(lab)
            lst = groups.get(g)
            if lst is None:
                groups[g] = [v]
            else:
                lst.append(v)
        op = self.op
        out: Vector = []
        for g, vs in groups.items():
            if op == "sum":
                r = math.fsum(vs) if all(math.isfinite(x) for x in vs) else sum(vs)
            elif op == "avg":
                r = sum(vs) / len(vs)
            elif op == "count":
                r = float(len(vs))
            elif op == "min":
                r = vs[0]
                for x in vs[1:]:
                    if x < r or r != r:
                        r = x
            else:
                r = vs[0]
                for x in vs[1:]:
                    if x > r or r != r:
                        r = x
            out.append((g, r))
        return out


AGGREGATIONS = ("sum", "avg", "min", "max", "count")


class CompiledExpr:
    """A checked, compiled expression: ``evaluate(history, t_ms)``."""

    def __init__(self, text: str, root: Node, max_range_ms: int, names: frozenset[str | None]):
        self.text = text
        self.root = root
        self.max_range_ms = max_range_ms
        """The longest ``[d]`` in the expression (what the history must keep)."""
        self.metric_names = names
        """Metric names the expression reads (None: a selector without a name)."""

    @property
    def is_scalar(self) -> bool:
        return self.root.is_scalar

    def evaluate(self, history: WindowHistory, t_ms: int, ctx: Context | None = None) -> Value:
        """The value at ``t_ms``; pass a shared ``Context`` to reuse selector results."""
        return self.root.value(ctx if ctx is not None else Context(history, t_ms))

    def __repr__(self) -> str:
        return f"CompiledExpr({self.text!r})"


def compile_expr(text: str) -> CompiledExpr:
    """Parse and check ``text``; raise ``UnsupportedExpression`` naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UnsupportedExpression("the expression is empty")
    try:
        ast = pp.parse(text)
    except ValueError as e:
        raise UnsupportedExpression(f"cannot parse {text!r}: {e}") from None
    c = _Compiler()
    root = c.node(ast)
    return CompiledExpr(text, root, c.max_range_ms, frozenset(c.names))


class _Compiler:
    def __init__(self) -> None:
        self.max_range_ms = 0
        self.names: set[str | None] = set()

    def selector(self, vs: Any) -> Selector:
        s = Selector(vs)
        self.names.add(s.name)
        return s

    def matrix(self, arg: Any, fname: str) -> tuple[Selector, int]:
        kind = type(arg).__name__
        if kind == "SubqueryExpr":
            raise UnsupportedExpression(f"subqueries are not supported ({arg} in {fname})")
        if kind != "MatrixSelector":
            raise UnsupportedExpression(f"{fname} needs a range selector like m[5m], got {arg}")
        rng = int(arg.range.total_seconds() * 1000)
        if rng <= 0:
            raise UnsupportedExpression(f"range must be positive in {arg}")
        self.max_range_ms = max(self.max_range_ms, rng)
        return self.selector(arg.vector_selector), rng

    def node(self, e: Any) -> Node:
        n = self._node(e)
        if not n.is_scalar and n.key is None and type(e).__name__ != "ParenExpr":
            n.key = str(e)
        return n

    def _node(self, e: Any) -> Node:
        kind = type(e).__name__
        if kind == "NumberLiteral":
            return Number(float(e.val))
        if kind == "ParenExpr":
            return self.node(e.expr)
        if kind == "UnaryExpr":
            return Negate(self.node(e.expr))
        if kind == "VectorSelector":
            return self.selector(e)
        if kind == "MatrixSelector":
            raise UnsupportedExpression(
                f"a range selector ({e}) must be the argument of a range function such as "
                "avg_over_time or rate"
            )
        if kind == "SubqueryExpr":
            raise UnsupportedExpression(f"subqueries are not supported ({e})")
        if kind == "StringLiteral":
            raise UnsupportedExpression(f"string literals are not supported ({e})")
        if kind == "AggregateExpr":
            return self.aggregate(e)
        if kind == "BinaryExpr":
            return self.binary(e)
        if kind == "Call":
            return self.call(e)
        raise UnsupportedExpression(f"unsupported expression {e}")  # pragma: no cover

    def aggregate(self, e: Any) -> Node:
        op = str(e.op)
        if op not in AGGREGATIONS:
            raise UnsupportedExpression(
                f"aggregation '{op}' is not supported (supported: {', '.join(AGGREGATIONS)})"
            )
        inner = self.node(e.expr)
        mod = e.modifier
        if mod is None:
            return Aggregate(op, inner, True, [])  # no clause: one group
        return Aggregate(op, inner, mod.type == pp.AggModifierType.By, list(mod.labels))

    def binary(self, e: Any) -> Node:
        op = str(e.op)
        if op not in ARITHMETIC and op not in COMPARISON and op not in SET_OPS:
            raise UnsupportedExpression(f"operator '{op}' is not supported")
        mod = e.modifier
        lhs, rhs = self.node(e.lhs), self.node(e.rhs)
        on, names, bool_ = False, [], False
        if mod is not None:
            bool_ = bool(mod.return_bool)
            if mod.card in (
                pp.VectorMatchCardinality.ManyToOne,
                pp.VectorMatchCardinality.OneToMany,
            ):
                raise UnsupportedExpression(
                    f"group_left/group_right (many-to-one matching) is not supported ({e})"
                )
            if mod.matching is not None:
                on = mod.matching.type == pp.LabelModifierType.Include
                names = list(mod.matching.labels)
        return Binary(op, lhs, rhs, bool_, Matching(on, names))

    def call(self, e: Any) -> Node:
        name = e.func.name
        args = list(e.args)
        if name == "absent":
            inner = self.node(args[0])
            return Absent(inner, _absent_labels(inner), None, None)
        if name == "absent_over_time":
            sel, rng = self.matrix(args[0], name)
            return Absent(sel, _absent_labels(sel), sel, rng)
        if name == "vector":
            return VectorOf(self.scalar(args[0], name))
        fn = RANGE_FUNCTIONS.get(name)
        if fn is None:
            supported = sorted([*RANGE_FUNCTIONS, "absent", "absent_over_time", "vector"])
            raise UnsupportedExpression(
                f"function '{name}' is not supported (supported: {', '.join(supported)})"
            )
        param: Node | None = None
        if fn.scalar_before:
            param, args = self.scalar(args[0], name), args[1:]
        elif fn.scalar_after:
            param, args = self.scalar(args[1], name), args[:1]
        sel, rng = self.matrix(args[0], name)
        return RangeCall(fn, sel, rng, param)

    def scalar(self, arg: Any, fname: str) -> Node:
        n = self.node(arg)
        if not n.is_scalar:
            raise UnsupportedExpression(f"{fname} needs a number parameter, got {arg}")
        return n
