"""The scheduled reports kept in ``reporting.out_dir``, as ``monitoring ui`` serves them
(``/reports/<file>``, the link of a report's Slack message).

Only the scheduler's own file names (``report-daily-2026-12-05.pdf``: no path, no
other file of the directory such as its state), only regular files (opened without
following a link), at most ``MAX_REPORT_BYTES``. ``open_report`` gives the open file
and its size, so that a server streams it in chunks (a request holds one chunk, not
the report).

>>> bool(REPORT_FILE.fullmatch("report-weekly-2026-11-30.html"))
True
>>> bool(REPORT_FILE.fullmatch("../report-daily-2026-12-05.pdf"))
False
>>> bool(REPORT_FILE.fullmatch("report-daily-2026-12-0\u0665.pdf"))  # ASCII digits only
False
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import BinaryIO

REPORT_FILE = re.compile(r"^report-(daily|weekly)-\d{4}-\d{2}-\d{2}\.(pdf|html)$", re.ASCII)
MAX_REPORT_BYTES = 64 * 1024 * 1024
MEDIA = {"pdf": "application/pdf", "html": "text/html; charset=utf-8"}


class NoReport(LookupError):
    """No kept report by that name (not one of ours, gone, or not a regular file)."""


def open_report(out_dir: str | Path, name: str) -> tuple[BinaryIO, int, str]:
    """The kept report ``name`` opened for reading, its size and its media type;
    :class:`NoReport` otherwise. The caller closes the file."""
    if not REPORT_FILE.fullmatch(name):
        raise NoReport(name)
    try:
        fd = os.open(Path(out_dir) / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # missing, a link (ELOOP), unreadable
        raise NoReport(name) from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_REPORT_BYTES:
        f.close()
        raise NoReport(name)
    return f, st.st_size, MEDIA[name.rsplit(".", 1)[1]]


def read_report(out_dir: str | Path, name: str) -> tuple[bytes, str]:
    """The kept report ``name`` and its media type; :class:`NoReport` otherwise."""
    f, size, media = open_report(out_dir, name)
    with f:
        body = f.read(size)
    return body, media
