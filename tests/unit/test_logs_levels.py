"""Level normalisation: every documented spelling, syslog and Python numbers, unknowns."""

from __future__ import annotations

import pytest

from monitoring.logs.levels import LEVELS, SEVERITY, at_least, normalise_level


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("trace", "TRACE"),
        ("FINEST", "TRACE"),
        ("debug", "DEBUG"),
        ("DBG", "DEBUG"),
        ("info", "INFO"),
        ("Informational", "INFO"),
        ("notice", "INFO"),
        ("", "INFO"),
        ("warn", "WARN"),
        ("WARNING", "WARN"),
        (" warning ", "WARN"),
        ("err", "ERROR"),
        ("ERROR", "ERROR"),
        ("severe", "ERROR"),
        ("fatal", "FATAL"),
        ("CRITICAL", "FATAL"),
        ("crit", "FATAL"),
        ("emerg", "FATAL"),
        ("alert", "FATAL"),
        ("panic", "FATAL"),
    ],
)
def test_names(raw: str, level: str) -> None:
    assert normalise_level(raw) == (level, True)


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("0", "FATAL"),
        ("1", "FATAL"),
        ("2", "FATAL"),
        ("3", "ERROR"),
        ("4", "WARN"),
        ("5", "INFO"),
        ("6", "INFO"),
        ("7", "DEBUG"),
    ],
)
def test_syslog_severities(raw: str, level: str) -> None:
    assert normalise_level(raw) == (level, True)


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("10", "DEBUG"),
        ("15", "DEBUG"),
        ("20", "INFO"),
        ("30", "WARN"),
        ("40", "ERROR"),
        ("50", "FATAL"),
        ("60", "FATAL"),
    ],
)
def test_python_numeric_levels(raw: str, level: str) -> None:
    assert normalise_level(raw) == (level, True)


@pytest.mark.parametrize("raw", ["verbose", "8", "9", "-1", "1000", "W A R N", "\x00"])
def test_unknown_levels_map_to_info_and_say_so(raw: str) -> None:
    assert normalise_level(raw) == ("INFO", False)


def test_severity_order() -> None:
    assert [SEVERITY[x] for x in LEVELS] == [1, 5, 9, 13, 17, 21]
    assert at_least("ERROR", "ERROR") and at_least("FATAL", "WARN")
    assert not at_least("INFO", "WARN")
