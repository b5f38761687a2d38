"""Structured logging for every process role (structlog).

JSON lines when not attached to a terminal (production, CI), readable key=value in
a terminal. Call ``configure_logging()`` once at process start. With a file
(``logging.file`` in the settings) every line also goes, as JSON, to that file, rotated
daily at midnight UTC (``app.log.2026-11-26``) and gzip-compressed on rotation, keeping
``logging.backups`` old files: the standard library's ``TimedRotatingFileHandler`` with
a gzip rotator.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import sys
from logging.handlers import TimedRotatingFileHandler
from pathlib import Path
from typing import Any

import structlog

from monitoring.config import LoggingSettings


def _gzip_rotator(source: str, dest: str) -> None:
    with open(source, "rb") as src, gzip.open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    os.remove(source)


def rotating_file_handler(
    path: str | Path, when: str = "midnight", backups: int = 14, compress: bool = True
) -> TimedRotatingFileHandler:
    """A handler writing each message as is to ``path``, rotated ``when`` (UTC)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = TimedRotatingFileHandler(
        path, when=when, backupCount=backups, utc=True, encoding="utf-8"
    )
    if compress:
        handler.namer = lambda name: name + ".gz"
        handler.rotator = _gzip_rotator
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


class _TeeLogger:
    """structlog's final logger: the rendered line to stderr, and to a file if set."""

    def __init__(self, file: logging.Logger | None) -> None:
        self.file = file

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)
        if self.file is not None:
            self.file.info(message)

    log = debug = info = warn = warning = err = error = critical = exception = msg
    failure = fatal = msg


def configure_logging(
    level: str | None = None, json: bool | None = None, file: LoggingSettings | None = None
) -> None:
    """Route structlog and stdlib logging to stderr, JSON unless stderr is a TTY; also
    to a daily rotated, compressed file when ``file.file`` is set. ``level`` defaults
    to ``file.level`` (the settings' ``logging.level``), else INFO."""
    if level is None:
        level = file.level if file is not None else "INFO"
    if json is None:
        json = not sys.stderr.isatty()
    file_logger = None
    if file is not None and file.file:
        file_logger = logging.getLogger("monitoring.logfile")
        file_logger.handlers.clear()
        file_logger.propagate = False
        file_logger.setLevel(logging.INFO)
        file_logger.addHandler(
            rotating_file_handler(file.file, file.rotation, file.backups, file.compress)
        )
        json = True  # files are for machines
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=lambda *args: _TeeLogger(file_logger),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )


def get_logger(name: str) -> Any:
    """A structlog logger bound to ``component=name``."""
    return structlog.get_logger(component=name)
