"""``str.isdigit()`` is true for ``"²"`` and Arabic-Indic digits, and ``int("²")`` raises: numbers
read from hostile text must be ASCII digits. A dead letter with ``x-source-partition:
²`` stopped every ``monitoring dlq list|show|replay`` scan with a ValueError; a WSGI
status line of ``²²² OK`` raised inside the perf middleware."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from monitoring.ops.deadletters import DeadLetter, Selection, SelectionError


@pytest.mark.parametrize(
    "value", ["\u00b2", "\u0661\u0662", "\u00b3\u2074", "-1", "1e3", " 5", "5\n", "9" * 20]
)
def test_dead_letter_headers_that_are_not_ascii_numbers_are_no_number(value: str) -> None:
    names = ("x-source-partition", "x-source-offset", "x-truncated", "x-key-truncated")
    headers = [(h, value.encode()) for h in names]
    d = DeadLetter.from_record(0, 1, 0, b"k", b"v", headers)
    assert d.source_partition is None and d.source_offset is None
    assert d.truncated_from is None and d.key_truncated_from is None


def test_dead_letter_headers_that_are_numbers_are_read() -> None:
    d = DeadLetter.from_record(0, 1, 0, b"k", b"v", [("x-source-partition", b"3")])
    assert d.source_partition == 3


@pytest.mark.parametrize("text", ["\u0661\u0662", "0:\u0661-\u0662", "\u00b2"])
def test_selections_are_ascii(text: str) -> None:
    with pytest.raises(SelectionError):
        Selection.parse(text)


def test_a_wsgi_status_that_is_not_ascii_does_not_break_the_app() -> None:
    from monitoring.perf.tracking import HttpMetrics
    from monitoring.perf.wsgi import WsgiPerfMiddleware

    seen: list[tuple[Any, ...]] = []

    class Metrics(HttpMetrics):
        def __init__(self) -> None:
            pass

        def started(self, method: str) -> str:
            return method

        def finished(self, *args: Any) -> None:
            seen.append(args)

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        start("²²² Odd", [("Content-Type", "text/plain")])
        return [b"x"]

    mw = WsgiPerfMiddleware(app, Metrics())
    body = mw({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, lambda *a: None)
    assert b"".join(body) == b"x"
    list(body)
    close = getattr(body, "close", None)
    if close is not None:
        close()
    assert seen, "the request was not recorded"


def test_a_log_level_of_superscript_digits_is_an_unknown_level() -> None:
    """A producer's level ``"²"`` raised in the logs agent (its record dead-lettered as
    a processing error instead of stored with an unknown level)."""
    from monitoring.logs.levels import normalise_level

    assert normalise_level("3") == normalise_level("err")
    _level, known = normalise_level("\u00b2")
    assert known is False


def test_a_heartbeat_nested_too_deep_is_skipped_not_a_crash() -> None:
    """16 KB of ``[`` fit the heartbeat bound and recursed past ``json``'s limit:
    RecursionError escaped ``parse_heartbeat`` and ended ``monitoring status``."""
    from monitoring.ops.status import InvalidHeartbeat, parse_heartbeat

    with pytest.raises(InvalidHeartbeat) as e:
        parse_heartbeat(b"x", b"[" * 16_000)
    assert e.value.reason == "not-json"
