"""Where a bad query goes wrong: promql-parser reports no position, so this finds it.

Lexical faults (an unterminated string, an unexpected character, a closing bracket
without its opening one, an unclosed bracket) are located exactly. For the rest, the
query is cut after each token and the cut is completed with a few typical endings
(closing brackets, an operand, a duration...): the error is at the first token after
the longest prefix that some ending makes valid. That is Prometheus's position in the
common cases (``foo{a=}``, ``x +``, ``sum(x) by``) and a good hint otherwise.
"""

from __future__ import annotations

import promql_parser as pp

_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")": "(", "]": "[", "}": "{"}
_SYMBOLS = set("+-*/%^=!<>,:@~")
_ENDINGS = (
    "",
    " 1",
    " x",
    ' "v"',
    "m",
    " 1m",
    " (a) (x)",
    " (a)",
    '="v"',
    " x)",
    ":]",
    "[1m]",
    " x[1m]",
)


def _tokens(query: str) -> tuple[list[tuple[int, int]], list[str], int | None]:
    """Token spans, the open brackets at the end, or the position of a lexical fault."""
    spans: list[tuple[int, int]] = []
    stack: list[tuple[str, int]] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
            continue
        start = i
        if c == "#":  # comment to the end of the line
            while i < n and query[i] != "\n":
                i += 1
            continue
        if c in "\"'`":
            i += 1
            while i < n and query[i] != c:
                if query[i] == "\\" and c != "`":
                    i += 1
                elif query[i] == "\n" and c != "`":
                    return spans, [], start
                i += 1
            if i >= n:
                return spans, [], start
            i += 1
        elif c in _OPEN:
            stack.append((c, i))
            i += 1
        elif c in _CLOSE:
            if not stack or stack[-1][0] != _CLOSE[c]:
                return spans, [], i
            stack.pop()
            i += 1
        elif c.isalnum() or c in "_.:":
            while i < n and (query[i].isalnum() or query[i] in "_.:"):
                i += 1
        elif c in _SYMBOLS:
            while i < n and query[i] in _SYMBOLS - {"-", "+"} and i - start < 2:
                i += 1
            i = max(i, start + 1)
        else:
            return spans, [], i
        spans.append((start, i))
    if stack:
        return spans, [_OPEN[b] for b, _ in reversed(stack)], None
    return spans, [], None


def _viable(prefix: str) -> bool:
    _, closers, fault = _tokens(prefix)
    if fault is not None:
        return False
    tail = "".join(closers)
    for ending in _ENDINGS:
        try:
            pp.parse(prefix + ending + tail)
        except ValueError:
            continue
        return True
    return False


def error_position(query: str) -> int | None:
    """The 0-based character offset of the first error in an invalid ``query``."""
    spans, _, fault = _tokens(query)
    if fault is not None:
        return fault
    if not spans:
        return 0
    good = -1
    for k, (_, end) in enumerate(spans):
        if not _viable(query[:end]):
            break
        good = k
    if good == len(spans) - 1:
        return len(query)  # every token fits: the input ends too early
    return spans[good + 1][0]
