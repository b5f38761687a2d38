"""Memory of a detector's state, measured by walking its object graph.

>>> deep_sizeof([1.5, 2.5]) > sys.getsizeof([1.5, 2.5])
True
"""

from __future__ import annotations

import sys
from collections import deque


def deep_sizeof(obj: object) -> int:
    """Bytes of ``obj`` and everything it references (each object counted once;
    classes are not counted)."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset | deque):
            stack.extend(o)
        if hasattr(o, "__dict__"):
            stack.append(o.__dict__)
        for cls in type(o).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(o, slot):
                    stack.append(getattr(o, slot))
    return total
