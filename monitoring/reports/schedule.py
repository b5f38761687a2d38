"""Scheduled reports: one per period, across restarts, mailed, kept for a retention.

:class:`ReportScheduler` (``monitoring report schedule``, the ``reporting`` settings):

- **Periods** are whole UTC days (``daily``) or Monday-to-Monday UTC weeks
  (``weekly``). At any moment the due period is the last one that has ended.
- **Once per period**: the end of the last period reported is kept in
  ``<out_dir>/schedule-state.json`` (written to a temporary file, fsynced and renamed
  over the old one, so a crash leaves the old state or the new, never half). A process
  that starts (again) reports the due period only if the state has not recorded it;
  periods missed while it was down are not back-filled (the report of the latest is
  sent). The state is written after the report was saved and mailed: a crash in between
  sends that report again after the restart (at least once), never skips it. A state
  write that fails without a crash is retried alone: the process remembers what it
  mailed, so the retry does not mail the report again.
- **Delivery**: a PDF/HTML attachment through the notifier's e-mail channel
  (:func:`monitoring.sinks.notifiers.email.send_message`: STARTTLS, AUTH, timeouts),
  and a Slack message with a link (``<reporting.link_base_url>/reports/<file>``, which
  ``monitoring ui`` serves from ``out_dir``) to every ``slack_configs`` entry of the
  ``reporting.slack_receivers`` in the notifier's config file, posted as the notifier
  posts (:func:`monitoring.sinks.notifiers.base.post_json`). A failed delivery leaves
  the period due; the loop tries again after ``retry_s``, and a retry by the same
  process sends only what failed (a mail that went out is not sent again because a
  Slack post failed).
- **One at a time**: a scheduler reports while holding ``<out_dir>/.schedule.lock``
  (``flock``); another (a replica, a ``--once`` run) skips meanwhile and then finds the
  period recorded.
- **Store**: the running store's query endpoint only. Unlike ``monitoring report run``,
  the scheduler never opens the chDB directory itself: it would hold chDB's one-process
  lock for the whole report, and a store restarting meanwhile could not start. A store
  that does not answer leaves the period due (tried again after ``retry_s``).
- **Retention**: report files older than ``reporting.retention`` are deleted after each
  run (only this scheduler's own file names, regular files only: a link or a directory
  under such a name is left alone). Every file is written through a new temporary file
  (``mkstemp``: O_EXCL, mode 0600), so a link planted in ``out_dir`` is never written
  through.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import math
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from monitoring.config import Settings
from monitoring.log import get_logger
from monitoring.query.client import StoreClient, open_store
from monitoring.reports.generator import Report, ReportData, ReportGenerator
from monitoring.reports.kept import REPORT_FILE

DAY_S = 86_400
PERIOD_S = {"daily": DAY_S, "weekly": 7 * DAY_S}
MAX_STATE_S = 32_503_680_000.0  # 3000-01-01: a later period end is not a real one
STATE_FILE = "schedule-state.json"
LOCK_FILE = ".schedule.lock"  # held (flock) while a scheduler reports into the directory
_TEMP_FILE = re.compile(
    r"^\.(report-(daily|weekly)-\d{4}-\d{2}-\d{2}\.(pdf|html)|schedule-state\.json)\.\w+\.part$",
    re.ASCII,
)
log = get_logger("reports")

if TYPE_CHECKING:
    from monitoring.alerts.receivers import SlackConfig

SLACK_TIMEOUT_S = 10.0
ClientOpener = Callable[[Settings], Any]  # a context manager giving a StoreClient
Sender = Callable[[EmailMessage], None]


def period_end(now_s: float, schedule: str) -> float:
    """The end of the last whole period at ``now_s`` (UTC midnight, or Monday's).

    >>> period_end(86_400 * 3.5, "daily"), period_end(86_400 * 10.2, "weekly")
    (259200.0, 345600.0)
    """
    day = math.floor(now_s / DAY_S)
    if schedule == "weekly":
        day -= (day + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return float(day * DAY_S)


def load_state(path: Path) -> float:
    """The end of the last period reported (0 when none, or the state is unreadable: not
    a finite number of seconds, e.g. ``NaN`` or ``1e308``, which would compare as "done"
    with every period and stop the reports for good)."""
    try:
        with path.open("rb") as f:
            value = json.loads(f.read(4096))["last_end_s"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return 0.0
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) and 0 <= value <= MAX_STATE_S else 0.0


def write_atomic(path: Path, content: bytes) -> None:
    """``content`` to ``path``: a new temporary file beside it (``mkstemp``: O_EXCL, no
    link followed, mode 0600), fsynced and renamed over ``path``, then the directory
    fsynced. A crash leaves the old file or the new; a link planted in the directory is
    neither written through nor followed."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def save_state(path: Path, last_end_s: float) -> None:
    """Record ``last_end_s`` atomically (:func:`write_atomic`)."""
    write_atomic(path, json.dumps({"last_end_s": last_end_s, "written": time.time()}).encode())


class ReportScheduler:
    """Runs the ``reporting`` schedule (see the module)."""

    def __init__(
        self,
        settings: Settings,
        url: str | None = None,
        send: Sender | None = None,
        clock: Callable[[], float] = time.time,
        retry_s: float = 300.0,
    ) -> None:
        self.settings = settings
        self.cfg = settings.reporting
        if self.cfg.schedule == "off":
            raise ValueError("reporting.schedule is off: set it to daily or weekly")
        self.url = url
        self.send = send or self._send_email
        self.clock = clock
        self.retry_s = retry_s
        self.out_dir = Path(self.cfg.out_dir)
        self.state_path = self.out_dir / STATE_FILE
        # the period this process is delivering, and what of it went out: a retry
        # sends only the rest
        self._done: tuple[float, set[str]] = (0.0, set())
        self.generator = ReportGenerator()
        self.generator.check_template(self.cfg.template)
        if self.cfg.email.to:
            self.email_config()  # a bad address or smarthost refuses to start
        self.slack = self.slack_configs()  # as must a missing receiver

    @property
    def length_s(self) -> int:
        return PERIOD_S[self.cfg.schedule]

    def due(self, now_s: float | None = None) -> float | None:
        """The end of the period to report now, or None when it was reported."""
        end = period_end(self.clock() if now_s is None else now_s, self.cfg.schedule)
        return end if load_state(self.state_path) < end else None

    def run_once(self, now_s: float | None = None) -> Path | None:
        """Report the due period (write, mail, record); None when nothing is due, or
        another scheduler is reporting into the same directory."""
        if self.due(now_s) is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.out_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("report_busy", out_dir=str(self.out_dir))
                return None
            end = self.due(now_s)  # again, under the lock: the other may have just reported
            return None if end is None else self._report(end)
        finally:
            os.close(fd)  # and with it the lock

    def _report(self, end: float) -> Path:
        day = datetime.fromtimestamp(end - self.length_s, UTC).strftime("%Y-%m-%d")
        path = self.out_dir / f"report-{self.cfg.schedule}-{day}.{self.cfg.format}"
        if self._done[0] != end:
            self._done = (end, set())
        done = self._done[1]
        if "mailed" not in done or not path.is_file():  # else only a post or the state failed
            title = f"Monitoring report ({self.cfg.schedule}): {day}"
            with open_store(self.settings, self.url, fallback=False) as client:
                data = self.collect(client, end, title)
            report = self.generator.generate(
                data, self.cfg.template, "pdf" if self.cfg.format == "pdf" else "html"
            )
            write_atomic(path, report.content)
            if self.cfg.email.to:
                self.send(self.message(report, data, path.name))
            done.add("mailed")
        if self.slack:
            self.post_link(f"{self.cfg.schedule.capitalize()} report {day}", path.name, done)
        save_state(self.state_path, end)
        log.info(
            "report_sent", path=str(path), period_end=end, mailed=bool(self.cfg.email.to),
            slack=len(self.slack),
        )  # fmt: skip
        self.prune()
        return path

    def link(self, filename: str) -> str:
        """Where ``monitoring ui`` serves a report of ``out_dir``."""
        return f"{self.cfg.link_base_url}/reports/{filename}"

    def slack_configs(self) -> list[tuple[str, SlackConfig]]:
        """``(receiver/slack_configs[i], config)`` of each ``reporting.slack_receivers``
        in the notifier's config file; ValueError when one is missing or has none."""
        from monitoring.alerts.manager_config import ManagerConfig
        from monitoring.alerts.receivers import parse_receiver

        if not self.cfg.slack_receivers:
            return []
        source = self.settings.notifier.config
        raw = ManagerConfig.load(source).receiver_configs
        out = []
        for name in self.cfg.slack_receivers:
            if name not in raw:
                raise ValueError(f"reporting.slack_receivers: no receiver {name!r} in {source}")
            configs = parse_receiver(raw[name]).slack_configs
            if not configs:
                raise ValueError(f"reporting.slack_receivers: {name!r} has no slack_configs")
            out += [(f"{name}/slack_configs[{i}]", c) for i, c in enumerate(configs)]
        return out

    def post_link(self, title: str, filename: str, done: set[str]) -> None:
        """Post "``title``: <link>" to each Slack config not in ``done`` (adding those
        that took it); the first failure is raised after trying every one."""
        from monitoring.sinks.notifiers.base import Context, DeliveryError, post_json
        from monitoring.sinks.notifiers.slack import text_payload

        text = f"{title}: {self.link(filename)}"

        async def post_all() -> list[DeliveryError]:
            failed = []
            async with httpx.AsyncClient(timeout=SLACK_TIMEOUT_S) as http:
                ctx = Context(http, timeout_s=SLACK_TIMEOUT_S)
                for key, cfg in self.slack:
                    if key in done:
                        continue
                    try:
                        await post_json(
                            ctx, cfg.api_url.get_secret_value(), text_payload(cfg, text)
                        )
                    except DeliveryError as e:
                        log.warning("report_post_failed", receiver=key, error=str(e)[:300])
                        failed.append(e)
                    else:
                        done.add(key)
            return failed

        failed = asyncio.run(post_all())
        if failed:
            raise failed[0]

    def collect(self, client: StoreClient, end: float, title: str) -> ReportData:
        sections: list[str] | None = [str(s) for s in self.cfg.sections] or None
        return self.generator.collect(
            client, self.length_s, end, title, sections, self.cfg.slo_target
        )

    def message(self, report: Report, data: ReportData, filename: str) -> EmailMessage:
        """The e-mail: a summary of the sections and the report attached."""
        from monitoring.sinks.notifiers.email import header_value

        em = self.cfg.email
        msg = EmailMessage()
        msg["Subject"] = header_value(data.title)
        msg["From"] = header_value(em.from_)
        msg["To"] = header_value(em.to)
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=em.hello)
        lines = [data.title, ""]
        for s in data.sections:
            state = s.summary or ("not available" if s.error else "no data")
            lines.append(f"- {s.title}: {state}")
        msg.set_content("\n".join(lines) + f"\n\nThe report is attached ({filename}).\n")
        maintype, subtype = ("application", "pdf") if report.format == "pdf" else ("text", "html")
        msg.add_attachment(report.content, maintype=maintype, subtype=subtype, filename=filename)
        return msg

    def _send_email(self, msg: EmailMessage) -> None:
        from monitoring.sinks.notifiers.email import send_message

        send_message(self.email_config(), msg)

    def email_config(self) -> Any:
        """The e-mail channel's config of ``reporting.email`` (ValueError when bad)."""
        from monitoring.alerts.receivers import EmailConfig

        em = self.cfg.email
        return EmailConfig.model_validate(
            {
                "to": em.to,
                "from": em.from_,
                "smarthost": em.smarthost,
                "hello": em.hello,
                "auth_username": em.auth_username,
                "auth_password": em.auth_password,
                "require_tls": em.require_tls,
                "timeout_s": em.timeout.total_seconds(),
            }
        )

    def prune(self, now_s: float | None = None) -> list[Path]:
        """Delete this scheduler's report files (and temporary files a crash left)
        older than the retention: regular files only, never through a link."""
        cutoff = (self.clock() if now_s is None else now_s) - self.cfg.retention.total_seconds()
        gone = []
        for p in sorted(self.out_dir.iterdir()):
            if not (REPORT_FILE.fullmatch(p.name) or _TEMP_FILE.fullmatch(p.name)):
                continue
            try:
                st = p.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                    p.unlink()
                    gone.append(p)
            except OSError as e:  # gone meanwhile, or not ours to delete
                log.warning("report_prune_skipped", path=str(p), error=str(e)[:200])
        return gone

    def run(self, stop: threading.Event) -> None:
        """Report each period as it ends until ``stop`` is set."""
        while not stop.is_set():
            wait = self.retry_s
            try:
                self.run_once()
                now = self.clock()
                if self.due(now) is None:
                    wait = max(1.0, period_end(now, self.cfg.schedule) + self.length_s - now + 60)
                # else another scheduler holds the directory: look again after retry_s
            except Exception as e:  # a store or SMTP outage: the period stays due
                log.warning("report_failed", error=str(e)[:500], retry_s=self.retry_s)
            stop.wait(wait)
