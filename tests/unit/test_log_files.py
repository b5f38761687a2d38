"""The project's own log file: JSON lines, rotated daily, gzip-compressed, pruned."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from monitoring.config import LoggingSettings
from monitoring.log import configure_logging, get_logger


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    logging.getLogger("monitoring.logfile").handlers.clear()
    structlog.reset_defaults()
    configure_logging("INFO")


def test_lines_rotate_into_gzip_files_and_old_ones_are_pruned(
    tmp_path: Path, restore_logging: None
) -> None:
    path = tmp_path / "logs" / "worker.log"
    configure_logging("INFO", file=LoggingSettings(file=str(path), backups=2))
    log = get_logger("test")
    log.info("first", n=1)
    assert json.loads(path.read_text())["event"] == "first"

    handler = logging.getLogger("monitoring.logfile").handlers[0]
    assert isinstance(handler, logging.handlers.TimedRotatingFileHandler)
    assert handler.when == "MIDNIGHT" and handler.utc
    for day in range(4):  # four midnights; a rotated file is named by the day it covers
        handler.rolloverAt = handler.computeRollover(0) + day * 86_400  # end of 1970-01-0N
        handler.doRollover()
        log.info("after", day=day)
        if day == 0:
            assert sorted(p.name for p in path.parent.iterdir()) == [
                "worker.log",
                "worker.log.1970-01-01.gz",
            ]
    rotated = sorted(p.name for p in path.parent.iterdir() if p.suffix == ".gz")
    assert rotated == ["worker.log.1970-01-03.gz", "worker.log.1970-01-04.gz"]  # 2 backups
    newest = gzip.decompress((path.parent / rotated[-1]).read_bytes()).splitlines()
    assert [(json.loads(x)["event"], json.loads(x)["day"]) for x in newest] == [("after", 2)]
    assert json.loads(path.read_text())["day"] == 3  # the live file holds the newest line
