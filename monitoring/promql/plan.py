"""The query plan: promql-parser's AST checked and turned into small frozen nodes.

``parse`` is the only place that touches the parser; everything after it works on
these nodes. Durations are integer milliseconds; ``@`` is kept as ``At``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import promql_parser as pp

from monitoring.promql.model import BadQuery, Matcher
from monitoring.promql.positions import error_position

Kind = Literal["scalar", "vector", "matrix", "string"]
NAME = "__name__"


@dataclass(frozen=True)
class At:
    """The ``@`` modifier: a fixed time, or the query's ``start()`` / ``end()``."""

    kind: Literal["at", "start", "end"]
    ms: int = 0


@dataclass(frozen=True, eq=False)
class Node:
    """A plan node; ``kind`` is its PromQL value type."""

    @property
    def kind(self) -> Kind:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class NumberLit(Node):
    value: float

    @property
    def kind(self) -> Kind:
        return "scalar"


@dataclass(frozen=True, eq=False)
class StringLit(Node):
    value: str

    @property
    def kind(self) -> Kind:
        return "string"


@dataclass(frozen=True, eq=False)
class VectorSel(Node):
    """An instant vector selector (also the series part of a range selector)."""

    matchers: tuple[Matcher, ...]
    offset_ms: int
    at: At | None
    text: str

    @property
    def kind(self) -> Kind:
        return "vector"


@dataclass(frozen=True, eq=False)
class MatrixSel(Node):
    sel: VectorSel
    range_ms: int

    @property
    def kind(self) -> Kind:
        return "matrix"


@dataclass(frozen=True, eq=False)
class Subquery(Node):
    expr: Node
    range_ms: int
    step_ms: int  # 0: the engine's default evaluation interval
    offset_ms: int
    at: At | None

    @property
    def kind(self) -> Kind:
        return "matrix"


@dataclass(frozen=True, eq=False)
class Call(Node):
    func: str
    args: tuple[Node, ...]
    returns: Kind

    @property
    def kind(self) -> Kind:
        return self.returns


@dataclass(frozen=True, eq=False)
class Aggregate(Node):
    op: str
    expr: Node
    param: Node | None
    without: bool
    grouping: tuple[str, ...]

    @property
    def kind(self) -> Kind:
        return "vector"


@dataclass(frozen=True, eq=False)
class Binary(Node):
    """``lhs op rhs``; ``card`` is one of one-to-one, many-to-one, one-to-many,
    many-to-many (set operators); ``on`` is None when no ``on``/``ignoring`` was given."""

    op: str
    lhs: Node
    rhs: Node
    return_bool: bool
    card: Literal["one-to-one", "many-to-one", "one-to-many", "many-to-many"]
    on: bool
    matching: tuple[str, ...]
    include: tuple[str, ...]

    @property
    def kind(self) -> Kind:
        if self.lhs.kind == "scalar" and self.rhs.kind == "scalar":
            return "scalar"
        return "vector"


@dataclass(frozen=True, eq=False)
class Negate(Node):
    expr: Node

    @property
    def kind(self) -> Kind:
        return self.expr.kind


def _ms(td: timedelta | None) -> int:
    if td is None:
        return 0
    return (td.days * 86_400 + td.seconds) * 1000 + td.microseconds // 1000


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _at(a: Any) -> At | None:
    if a is None:
        return None
    kind = str(a.type).rsplit(".", 1)[-1]
    if kind == "Start":
        return At("start")
    if kind == "End":
        return At("end")
    dt: datetime = a.at
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return At("at", _ms(dt - _EPOCH))


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}
_CARD = {
    "VectorMatchCardinality.OneToOne": "one-to-one",
    "VectorMatchCardinality.ManyToOne": "many-to-one",
    "VectorMatchCardinality.OneToMany": "one-to-many",
    "VectorMatchCardinality.ManyToMany": "many-to-many",
}
_KINDS: dict[str, Kind] = {
    "ValueType.Vector": "vector",
    "ValueType.Scalar": "scalar",
    "ValueType.Matrix": "matrix",
    "ValueType.String": "string",
}


def _selector(vs: Any) -> VectorSel:
    if vs.matchers.or_matchers:
        raise BadQuery(f"'or' inside label matchers is not PromQL 2.42 ({vs})")
    ms: list[Matcher] = []
    if vs.name is not None:
        ms.append(Matcher(NAME, "=", vs.name))
    for m in vs.matchers.matchers:
        op = _OPS[str(m.op)]
        ms.append(Matcher(m.name, op, m.value))  # type: ignore[arg-type]
    return VectorSel(tuple(ms), _ms(vs.offset), _at(vs.at), str(vs))


def _node(e: Any) -> Node:
    kind = type(e).__name__
    if kind == "ParenExpr":
        return _node(e.expr)
    if kind == "NumberLiteral":
        return NumberLit(float(e.val))
    if kind == "StringLiteral":
        return StringLit(e.val)
    if kind == "VectorSelector":
        return _selector(e)
    if kind == "MatrixSelector":
        return MatrixSel(_selector(e.vector_selector), _ms(e.range))
    if kind == "SubqueryExpr":
        return Subquery(_node(e.expr), _ms(e.range), _ms(e.step), _ms(e.offset), _at(e.at))
    if kind == "UnaryExpr":
        return Negate(_node(e.expr))
    if kind == "Call":
        f = e.func
        return Call(f.name, tuple(_node(a) for a in e.args), _KINDS[str(f.return_type)])
    if kind == "AggregateExpr":
        mod = e.modifier
        without = mod is not None and str(mod.type).endswith("Without")
        grouping = tuple(mod.labels) if mod is not None else ()
        param = _node(e.param) if e.param is not None else None
        return Aggregate(str(e.op), _node(e.expr), param, without, grouping)
    if kind == "BinaryExpr":
        return _binary(e)
    raise BadQuery(f"unsupported expression {e}")  # pragma: no cover


def _binary(e: Any) -> Binary:
    op = str(e.op)
    mod = e.modifier
    card = "one-to-one"
    on, matching, include, rb = False, (), (), False
    if mod is not None:
        rb = bool(mod.return_bool)
        card = _CARD.get(str(mod.card), "one-to-one")
        if mod.matching is not None:
            on = str(mod.matching.type).endswith("Include")
            matching = tuple(mod.matching.labels)
        include = tuple(mod.group_labels or ())
    if op in ("and", "or", "unless"):
        card = "many-to-many"
    return Binary(op, _node(e.lhs), _node(e.rhs), rb, card, on, matching, include)  # type: ignore[arg-type]


MAX_QUERY_BYTES = 16_384
MAX_DEPTH = 64
"""Bounds checked before parsing: the parser recurses (20,000 nested parentheses crashed
the process) and finding an error's position re-parses per token."""
MAX_POSITION_BYTES = 2_048  # longer invalid queries get no position


def parse(query: str) -> Node:
    """The plan of ``query``; ``BadQuery`` (with a character position) when it is invalid."""
    if not query.strip():
        raise BadQuery("1:1: parse error: no expression found in input", 0)
    check_size(query)
    try:
        ast = pp.parse(query)
    except ValueError as e:
        pos = error_position(query) if len(query) <= MAX_POSITION_BYTES else None
        raise BadQuery(f"{_where(query, pos)}parse error: {e}", pos) from None
    return _node(ast)


def check_size(query: str) -> None:
    """``BadQuery`` if ``query`` is longer than MAX_QUERY_BYTES or nests brackets deeper
    than MAX_DEPTH (outside string literals).

    >>> check_size("(" * 65 + "x" + ")" * 65)
    Traceback (most recent call last):
    ...
    monitoring.promql.model.BadQuery: query nests deeper than 64 brackets
    """
    if len(query.encode()) > MAX_QUERY_BYTES:
        raise BadQuery(f"query longer than {MAX_QUERY_BYTES} bytes", None)
    depth, quote, escaped = 0, "", False
    for ch in query:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\" and quote != "`":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BadQuery(f"query nests deeper than {MAX_DEPTH} brackets", None)
        elif ch in ")]}":
            depth -= 1


def _where(query: str, pos: int | None) -> str:
    """Prometheus's ``line:column: `` prefix (1-based column) for a 0-based offset."""
    if pos is None:
        return ""
    line = query.count("\n", 0, pos) + 1
    col = pos - (query.rfind("\n", 0, pos) + 1) + 1
    return f"{line}:{col}: "


def walk(node: Node) -> list[Node]:
    """Every node of the plan, parents before children."""
    out = [node]
    for child in children(node):
        out.extend(walk(child))
    return out


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-expressions of ``node``."""
    if isinstance(node, MatrixSel):
        return (node.sel,)
    if isinstance(node, Subquery | Negate):
        return (node.expr,)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Aggregate):
        return (node.expr,) if node.param is None else (node.param, node.expr)
    if isinstance(node, Binary):
        return (node.lhs, node.rhs)
    return ()


def selectors(query: str, lookback_ms: int = 300_000) -> list[tuple[list[Matcher], int]]:
    """Each selector's matchers and how far before the evaluation time it reaches
    (range + offset + lookback, through subqueries), in milliseconds."""
    out: list[tuple[list[Matcher], int]] = []

    def visit(node: Node, extra: int) -> None:
        if isinstance(node, VectorSel):
            out.append((list(node.matchers), extra + node.offset_ms + lookback_ms))
        elif isinstance(node, MatrixSel):
            out.append((list(node.sel.matchers), extra + node.sel.offset_ms + node.range_ms))
        elif isinstance(node, Subquery):
            visit(node.expr, extra + node.range_ms + node.offset_ms)
        else:
            for c in children(node):
                visit(c, extra)

    visit(parse(query), 0)
    return out
