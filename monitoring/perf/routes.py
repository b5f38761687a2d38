"""Route templates of a request: the ``route`` label, never the raw path.

A Starlette (or FastAPI) application's own routes are matched as its router matches
them, mounts included (``/api`` + ``/items/{id}``); other applications give a list of
templates in Starlette's syntax (``/items/{id:int}``), matched in order, or a function.
No match is ``None`` (the ``unmatched`` label).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from starlette.routing import Match, Mount, compile_path


def starlette_route(scope: dict[str, Any], routes: Iterable[Any]) -> str | None:
    """The template of the route that handles ``scope`` in a Starlette route list."""
    partial: str | None = None
    for route in routes:
        try:
            match, child = route.matches(scope)
        except Exception:  # a custom route that cannot match this scope
            continue
        if match is Match.FULL:
            path = getattr(route, "path", None)
            if not isinstance(path, str):
                return None
            if isinstance(route, Mount) and route.routes:
                inner = starlette_route({**scope, **child}, route.routes)
                return None if inner is None else path + inner
            return path
        if match is Match.PARTIAL and partial is None:  # e.g. 405: path matched, not method
            path = getattr(route, "path", None)
            partial = path if isinstance(path, str) else None
    return partial


class Templates:
    """Route templates matched in order against a path.

    >>> t = Templates(["/items/{id:int}", "/items/new", "/users/{name}"])
    >>> t.match("/items/42"), t.match("/users/ann"), t.match("/items/x"), t.match("/a")
    ('/items/{id:int}', '/users/{name}', None, None)
    """

    def __init__(self, templates: Sequence[str]) -> None:
        if len(templates) > 10_000:
            raise ValueError("at most 10,000 route templates")
        self._compiled: list[tuple[re.Pattern[str], str]] = []
        for t in templates:
            if not t.startswith("/"):
                raise ValueError(f"a route template starts with '/': {t!r}")
            self._compiled.append((compile_path(t)[0], t))

    def match(self, path: str) -> str | None:
        """The first template matching ``path``, or None."""
        for regex, template in self._compiled:
            if regex.match(path):
                return template
        return None
