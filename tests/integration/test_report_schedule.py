"""Scheduled reports: once per period across a restart, mailed to a real SMTP server
(aiosmtpd, fixtures/notify.py) with the PDF attached, old reports pruned. The store is
a chDB store served by its query server in this process. No Kafka broker."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from email.message import Message
from pathlib import Path

import pytest
from fixtures.notify import SMTP_PASSWORD, SMTP_USER, HttpReceiver, Reply, SmtpSink
from fixtures.viz_store import HOUR, VizStore, build_viz_store
from prometheus_client import CollectorRegistry

from monitoring.config import ReportingSettings, Settings
from monitoring.query import clickhouse_http, prometheus_api
from monitoring.reports.schedule import DAY_S, ReportScheduler, load_state, period_end
from monitoring.sinks.clickhouse.connection import connect_read_only
from monitoring.sinks.clickhouse.query_server import QueryServer
from monitoring.sinks.notifiers.base import DeliveryError

pytestmark = pytest.mark.no_broker
NOW_MS = int(time.time() * 1000) // HOUR * HOUR


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VizStore, str]]:
    viz = build_viz_store(tmp_path_factory.mktemp("schedule"), NOW_MS)
    reader = connect_read_only(viz.settings.storage.dsn, viz.settings.storage.query)
    server = QueryServer(
        reader, CollectorRegistry(), "127.0.0.1", 0, limits=viz.settings.storage.query,
        protocols=[clickhouse_http.routes, prometheus_api.routes],
    ).start()  # fmt: skip
    try:
        yield viz, "http://{}:{}".format(*server.address)
    finally:
        server.stop()
        reader.close()
        viz.client.close()


def settings(store: tuple[VizStore, str], out: Path, smtp: SmtpSink, **extra: object) -> Settings:
    config = out.parent / f"{out.name}.yml"
    config.write_text(
        f"""
storage:
  dsn: "{store[0].settings.storage.dsn}"
reporting:
  schedule: {extra.get("schedule", "daily")}
  format: pdf
  out_dir: "{out}"
  retention: 3d
  sections: [alerts, logs, anomalies]
  email:
    to: "ops@example.com, sre@example.com"
    from: "reports@example.com"
    smarthost: "127.0.0.1:{smtp.port}"
    auth_username: {SMTP_USER}
    auth_password: {SMTP_PASSWORD}
    require_tls: false
"""
    )
    return Settings.load(str(config))


def with_slack(base: Settings, notifier: Path, receivers: list[str], link: str) -> Settings:
    """``base`` posting its reports to ``receivers`` of the notifier's config file
    ``notifier``, linking to ``link`` (validated as the configuration file would be)."""
    reporting = ReportingSettings.model_validate({
        **base.reporting.model_dump(by_alias=True),
        "slack_receivers": receivers, "link_base_url": link,
    })  # fmt: skip
    return base.model_copy(update={
        "reporting": reporting,
        "notifier": base.notifier.model_copy(update={"config": str(notifier)}),
    })  # fmt: skip


def attachment(msg: Message) -> tuple[str, bytes]:
    for part in msg.walk():
        if part.get_content_disposition() == "attachment":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            return str(part.get_filename()), payload
    raise AssertionError("no attachment")


def test_once_per_period_across_a_restart(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    out = tmp_path / "reports"
    cfg = settings(store, out, smtp_server)
    now = NOW_MS / 1000
    first = ReportScheduler(cfg, store[1], clock=lambda: now)
    path = first.run_once()
    assert path is not None and path.exists() and path.read_bytes().startswith(b"%PDF-")
    assert first.run_once() is None  # the same period: nothing more
    end = period_end(now, "daily")
    assert load_state(out / "schedule-state.json") == end
    # a restart: a new scheduler on the same directory, later in the same day
    again = ReportScheduler(cfg, store[1], clock=lambda: now + 3600)
    assert again.due() is None and again.run_once() is None
    assert len(smtp_server.envelopes) == 1
    sender, rcpts, msg = smtp_server.envelopes[0]
    assert sender == "reports@example.com" and rcpts == ["ops@example.com", "sre@example.com"]
    assert smtp_server.logins == [SMTP_USER]
    name, pdf = attachment(msg)
    assert name == path.name and pdf == path.read_bytes()
    body = subprocess.run(
        ["pdftotext", "-", "-"], input=pdf, capture_output=True, check=True
    ).stdout.decode()
    assert "Monitoring report (daily)" in body and "Alerts fired" in body
    assert "Alerts fired:" in msg.get_payload(0).get_payload(decode=True).decode()  # type: ignore[union-attr]
    # the next day: the next period, once
    tomorrow = ReportScheduler(cfg, store[1], clock=lambda: now + DAY_S)
    second = tomorrow.run_once()
    assert second is not None and second != path and len(smtp_server.envelopes) == 2
    assert tomorrow.run_once() is None and len(smtp_server.envelopes) == 2


def test_weekly_periods_and_missed_ones(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    out = tmp_path / "weekly"
    cfg = settings(store, out, smtp_server, schedule="weekly")
    now = NOW_MS / 1000
    s = ReportScheduler(cfg, store[1], clock=lambda: now)
    path = s.run_once()
    assert path is not None and path.name.startswith("report-weekly-")
    monday = time.gmtime(period_end(now, "weekly") - 7 * DAY_S)
    assert (
        monday.tm_wday == 0
        and path.name == f"report-weekly-{time.strftime('%Y-%m-%d', monday)}.pdf"
    )
    # down for three weeks: one report, of the latest week (no back-fill)
    later = ReportScheduler(cfg, store[1], clock=lambda: now + 21 * DAY_S)
    assert later.run_once() is not None and later.run_once() is None
    assert len(smtp_server.envelopes) == 2


def test_a_failed_delivery_keeps_the_period_due(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    out = tmp_path / "failing"
    cfg = settings(store, out, smtp_server)
    broken = cfg.model_copy(
        update={
            "reporting": cfg.reporting.model_copy(
                update={
                    "email": cfg.reporting.email.model_copy(update={"smarthost": "127.0.0.1:1"})
                }
            )
        }
    )
    s = ReportScheduler(broken, store[1], clock=lambda: NOW_MS / 1000)
    with pytest.raises(DeliveryError):
        s.run_once()
    assert s.due() is not None  # not recorded: tried again
    fixed = ReportScheduler(cfg, store[1], clock=lambda: NOW_MS / 1000)
    assert fixed.run_once() is not None and len(smtp_server.envelopes) == 1


def test_old_reports_are_pruned(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    out = tmp_path / "pruned"
    out.mkdir()
    now = NOW_MS / 1000
    old = out / "report-daily-2020-01-01.pdf"
    kept = out / "report-daily-2020-01-02.pdf"
    other = out / "notes.pdf"
    for p in (old, kept, other):
        p.write_bytes(b"%PDF-")
    os.utime(old, (now - 4 * DAY_S, now - 4 * DAY_S))
    os.utime(other, (now - 40 * DAY_S, now - 40 * DAY_S))
    os.utime(kept, (now - 2 * DAY_S, now - 2 * DAY_S))
    s = ReportScheduler(settings(store, out, smtp_server), store[1], clock=lambda: now)
    assert s.prune() == [old]
    assert kept.exists() and other.exists()


def test_schedule_off_or_a_bad_template_refuses_to_start(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    cfg = settings(store, tmp_path / "x", smtp_server, schedule="off")
    with pytest.raises(ValueError, match=r"reporting\.schedule is off"):
        ReportScheduler(cfg, store[1])
    cfg = settings(store, tmp_path / "y", smtp_server)
    bad = cfg.model_copy(
        update={"reporting": cfg.reporting.model_copy(update={"template": "nope"})}
    )
    with pytest.raises(ValueError, match="no template"):
        ReportScheduler(bad, store[1])


def test_files_are_never_written_through_a_planted_link(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """The report's and the state's temporary files are new files (O_EXCL, no link
    followed): links planted at the names they used to have write nothing elsewhere."""
    out = tmp_path / "linked"
    out.mkdir()
    now = NOW_MS / 1000
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    day = time.strftime("%Y-%m-%d", time.gmtime(period_end(now, "daily") - DAY_S))
    for name in (f"report-daily-{day}.part", "schedule-state.tmp"):
        (out / name).symlink_to(victim)
    s = ReportScheduler(settings(store, out, smtp_server), store[1], clock=lambda: now)
    path = s.run_once()
    assert path is not None and path.read_bytes().startswith(b"%PDF-")
    assert victim.read_text() == "keep me"
    assert load_state(out / "schedule-state.json") == period_end(now, "daily")
    assert not path.is_symlink() and not (out / "schedule-state.json").is_symlink()


def test_pruning_skips_links_directories_and_vanished_files(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    out = tmp_path / "odd"
    out.mkdir()
    now = NOW_MS / 1000
    old_s = now - 40 * DAY_S
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"%PDF-")
    old = out / "report-daily-2020-01-01.pdf"
    old.write_bytes(b"%PDF-")
    (out / "report-daily-2020-01-02.pdf").symlink_to(tmp_path / "gone.pdf")  # dangling
    (out / "report-daily-2020-01-03.pdf").symlink_to(outside)
    (out / "report-daily-2020-01-04.pdf").mkdir()
    for p in (old, outside, out / "report-daily-2020-01-04.pdf"):
        os.utime(p, (old_s, old_s))
    s = ReportScheduler(settings(store, out, smtp_server), store[1], clock=lambda: now)
    assert s.prune() == [old]
    assert outside.exists() and (out / "report-daily-2020-01-03.pdf").is_symlink()


def test_a_bad_email_setting_refuses_to_start(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """Not after a report was built, at each retry: at the start, with the reason."""
    cfg = settings(store, tmp_path / "z", smtp_server)
    bad = cfg.model_copy(
        update={
            "reporting": cfg.reporting.model_copy(
                update={"email": cfg.reporting.email.model_copy(update={"smarthost": "nohost"})}
            )
        }
    )
    with pytest.raises(ValueError, match="host:port"):
        ReportScheduler(bad, store[1])
    assert not (tmp_path / "z").exists()


def test_the_scheduler_never_opens_the_store_directory_itself(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """A scheduler is a daemon: were it to open the chDB directory when the store does not
    answer (a restart), it would hold chDB's one-process lock for the whole report and the
    store could not start. It waits for the store instead; the period stays due."""
    from fixtures.prometheus import free_port

    from monitoring.query.client import StoreUnavailable

    out = tmp_path / "waiting"
    cfg = settings(store, out, smtp_server)
    s = ReportScheduler(cfg, f"http://127.0.0.1:{free_port()}", clock=lambda: NOW_MS / 1000)
    with pytest.raises(StoreUnavailable, match="no store answers at"):
        s.run_once()
    assert s.due() is not None and not smtp_server.envelopes
    assert not list(out.glob("report-*"))


def test_a_state_that_cannot_be_written_does_not_mail_again(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """Mailed, then the state write fails (here: a directory in its place): the retry
    records the period without building and mailing the report again."""
    out = tmp_path / "stuck"
    (out / "schedule-state.json").mkdir(parents=True)
    s = ReportScheduler(settings(store, out, smtp_server), store[1], clock=lambda: NOW_MS / 1000)
    with pytest.raises(OSError):
        s.run_once()
    assert len(smtp_server.envelopes) == 1
    (out / "schedule-state.json").rmdir()
    assert s.run_once() is not None and s.due() is None
    assert len(smtp_server.envelopes) == 1
    assert not list(out.glob(".*.part"))  # no temporary file left behind


def test_two_schedulers_on_one_directory_report_once(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """A daemon and a `--once` run (or two replicas) on the same out_dir: while one
    reports, the other does not report the same period; after it, nothing is due."""
    import fcntl

    out = tmp_path / "shared"
    cfg = settings(store, out, smtp_server)
    now = NOW_MS / 1000
    first = ReportScheduler(cfg, store[1], clock=lambda: now)
    second = ReportScheduler(cfg, store[1], clock=lambda: now)
    out.mkdir()
    with (out / ".schedule.lock").open("a") as held:  # as `first` holds it while reporting
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert second.run_once() is None and not smtp_server.envelopes
    assert first.run_once() is not None and second.run_once() is None
    assert len(smtp_server.envelopes) == 1


def test_schedule_once_explains_a_failure(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """`monitoring report schedule --once` with no store answering: the reason and exit 1,
    not a traceback; with the store, the report's path."""
    from fixtures.prometheus import free_port
    from typer.testing import CliRunner

    from monitoring.cli.report import app

    out = tmp_path / "cli"
    settings(store, out, smtp_server)  # writes <tmp>/cli.yml
    config = str(tmp_path / "cli.yml")
    url = f"http://127.0.0.1:{free_port()}"
    failed = CliRunner().invoke(app, ["schedule", "--once", "--config", config, "--url", url])
    text = " ".join(failed.output.split())
    assert failed.exit_code == 1 and f"no store answers at {url}" in text, failed.output
    assert failed.exception is None or isinstance(failed.exception, SystemExit)
    done = CliRunner().invoke(app, ["schedule", "--once", "--config", config, "--url", store[1]])
    assert done.exit_code == 0 and "report-daily-" in done.output, done.output


def test_a_busy_directory_is_looked_at_again_soon(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    """The running scheduler finds another reporting (the lock held): it looks again after
    retry_s, not a period later, so the period is reported should the other fail."""
    import fcntl
    import threading

    out = tmp_path / "busy"
    out.mkdir()
    s = ReportScheduler(settings(store, out, smtp_server), store[1], retry_s=0.2)
    attempts: list[Path | None] = []
    run_once = s.run_once
    s.run_once = lambda now_s=None: attempts.append(run_once(now_s)) or attempts[-1]  # type: ignore[method-assign]
    stop = threading.Event()
    with (out / ".schedule.lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        worker = threading.Thread(target=s.run, args=(stop,), daemon=True)
        worker.start()
        deadline = time.monotonic() + 30
        while not attempts and time.monotonic() < deadline:
            stop.wait(0.05)
        assert attempts == [None]  # it found the directory busy
    try:  # the other "failed" without reporting: ours reports it
        deadline = time.monotonic() + 15
        # the mail lands before the scheduler records the period as done: wait for both
        while not (smtp_server.envelopes and s.due() is None) and time.monotonic() < deadline:
            stop.wait(0.1)
        assert len(smtp_server.envelopes) == 1 and s.due() is None
    finally:
        stop.set()
        worker.join(timeout=60)


def test_a_report_is_posted_to_slack_with_a_link_the_ui_serves(
    store: tuple[VizStore, str],
    smtp_server: SmtpSink,
    http_receiver_factory: Callable[..., HttpReceiver],
    tmp_path: Path,
) -> None:
    """The report's Slack message (the notifier's receivers' incoming webhooks) links to
    the running `monitoring ui`, which serves the PDF to a signed-in client only, and no
    other file of the directory. A failed post keeps the period due; the retry posts
    only where it failed, without mailing again."""
    import httpx
    import yaml
    from pydantic import SecretStr

    from monitoring.ui.server import UiServer

    ops = http_receiver_factory([Reply(status=500)])  # Slack answers 500 once
    team = http_receiver_factory()
    notifier = tmp_path / "notifier.yml"
    notifier.write_text(yaml.safe_dump({
        "route": {"receiver": "ops"},
        "receivers": [
            {"name": "ops", "slack_configs": [
                {"api_url": f"{ops.url}/services/T0/B0/secret", "channel": "#reports"}]},
            {"name": "team", "slack_configs": [{"api_url": f"{team.url}/hook"}]},
            {"name": "pager", "webhook_configs": [{"url": f"{team.url}/pager"}]},
        ],
    }))  # fmt: skip
    out = tmp_path / "reports"
    base = settings(store, out, smtp_server)
    token = "report-link-t0ken"
    ui_settings = base.model_copy(update={
        "api": base.api.model_copy(update={"token": SecretStr(token)}),
        "ui": base.ui.model_copy(update={"store_url": store[1]}),
    })  # fmt: skip
    ui = UiServer(ui_settings, CollectorRegistry(), "127.0.0.1", 0).start()
    try:
        cfg = with_slack(base, notifier, ["ops", "team"], ui.url + "/")
        s = ReportScheduler(cfg, store[1], clock=lambda: NOW_MS / 1000)
        with pytest.raises(DeliveryError, match="HTTP 500"):
            s.run_once()
        assert s.due() is not None  # not recorded: tried again
        assert len(smtp_server.envelopes) == 1 and len(team.bodies) == 1 and not ops.bodies
        path = s.run_once()
        assert path is not None and s.due() is None
        assert len(smtp_server.envelopes) == 1 and len(team.bodies) == 1  # not sent again
        day = time.strftime("%Y-%m-%d", time.gmtime(period_end(NOW_MS / 1000, "daily") - DAY_S))
        link = f"{ui.url}/reports/{path.name}"
        assert ops.bodies == [
            {"username": "monitoring", "text": f"Daily report {day}: {link}", "channel": "#reports"}
        ]
        assert ops.requests[-1].path == "/services/T0/B0/secret"
        assert team.bodies[0]["text"] == f"Daily report {day}: {link}"

        resp = httpx.get(link, auth=("reader", token))
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/pdf"
        assert resp.content == path.read_bytes() and resp.content.startswith(b"%PDF-")
        assert httpx.get(link).status_code == 401  # not signed in
        (out / "report-daily-2000-01-01.pdf").symlink_to("/etc/passwd")
        for name in (
            "schedule-state.json",  # in the directory, not a report
            "..%2Fnotifier.yml",
            "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
            "report-daily-2000-01-01.pdf",  # a link planted under a report's name
            "report-daily-1999-01-01.pdf",  # none
        ):
            r = httpx.get(f"{ui.url}/reports/{name}", auth=("reader", token))
            assert r.status_code == 404, (name, r.status_code, r.text[:200])
            assert b"%PDF" not in r.content and b"root:" not in r.content
    finally:
        ui.stop()


def test_slack_receivers_must_exist_and_have_a_slack_config(
    store: tuple[VizStore, str], smtp_server: SmtpSink, tmp_path: Path
) -> None:
    import yaml

    notifier = tmp_path / "notifier.yml"
    notifier.write_text(yaml.safe_dump({
        "route": {"receiver": "hook"},
        "receivers": [{"name": "hook", "webhook_configs": [{"url": "http://127.0.0.1:1/x"}]}],
    }))  # fmt: skip
    base = settings(store, tmp_path / "reports", smtp_server)
    link = "https://mon.example.com"
    with pytest.raises(ValueError, match="no receiver 'nobody'"):
        ReportScheduler(with_slack(base, notifier, ["nobody"], link), store[1])
    with pytest.raises(ValueError, match="'hook' has no slack_configs"):
        ReportScheduler(with_slack(base, notifier, ["hook"], link), store[1])
    with pytest.raises(ValueError, match="link_base_url"):
        with_slack(base, notifier, ["hook"], "")
    with pytest.raises(ValueError, match="http"):
        with_slack(base, notifier, ["hook"], "javascript:alert(1)")
