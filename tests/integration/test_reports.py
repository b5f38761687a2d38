"""Reports from a chDB store with a day of data (fixtures/viz_store.py), read back with
Debian's poppler (`make pdftools`: pdftotext, pdftoppm, pdfimages). No Kafka broker.

The store's query server runs in this process with a token, as `monitoring store run`
serves it; `monitoring report run` is invoked through typer's runner against it, and once
with no store answering (the in-process query server over the chDB directory).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.prometheus import free_port
from fixtures.viz_store import HOUR, MIN, VizStore, _dt, served_viz_store
from typer.testing import CliRunner

from monitoring.cli.report import app
from monitoring.plots import PlotGenerator
from monitoring.query.client import StoreClient
from monitoring.reports import ReportGenerator

pytestmark = pytest.mark.no_broker
TOKEN = "report-t0ken-5150"
NOW_MS = int(time.time() * 1000) // HOUR * HOUR
DAY_S = 86_400
TITLES = ("SLO attainment", "Alerts fired", "Top anomalies", "Log templates", "Model quality",
          "Resource utilization", "Performance")  # fmt: skip
# the store has no RED series (tests/integration/test_perf_analyze.py fills that section)
EMPTY = "Performance"


@pytest.fixture(scope="module", autouse=True)
def poppler() -> None:
    for tool in ("pdftotext", "pdftoppm", "pdfimages"):
        assert shutil.which(tool), f"{tool} is missing: run `make pdftools`"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VizStore, str]]:
    with served_viz_store(tmp_path_factory.mktemp("report"), NOW_MS, TOKEN) as served:
        yield served


def pdftotext(pdf: Path) -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout


def run(store: tuple[VizStore, str], *args: str, url: str | None = None) -> tuple[int, str]:
    """``monitoring report`` at ``--url`` (the store's by default); ``url=""``: no
    ``--url``, the settings' endpoint, where nothing listens."""
    env = {
        "MONITORING_API__TOKEN": TOKEN, "MONITORING_STORAGE__DSN": store[0].settings.storage.dsn,
        "MONITORING_STORAGE__QUERY_PORT": str(free_port()),
    }  # fmt: skip
    where = [] if url == "" else ["--url", url or store[1]]
    result = CliRunner().invoke(app, [*args, *where], env=env)
    return result.exit_code, result.output


def test_sections_from_the_store(store: tuple[VizStore, str]) -> None:
    with StoreClient(store[1], TOKEN) as client:
        data = ReportGenerator.collect(client, DAY_S, NOW_MS / 1000)
    by = {s.key: s for s in data.sections}
    assert [s.title for s in data.sections] == list(TITLES)
    assert all(not s.error and not s.empty for s in data.sections if s.title != EMPTY), [
        (s.key, s.error) for s in data.sections
    ]
    assert by["performance"].empty and not by["performance"].error
    alerts = by["alerts"]
    # fired 300, 120, 200 (never resolved), 60 min ago; resolved 25, 15, 5 min later
    # acknowledged 4 and 6 min after firing (by fingerprint, by group key): MTTA 5 min
    assert alerts.summary == "4 alerts fired; MTTR 15 min; MTTA 5 min (2 of 4 acknowledged)"
    assert [r[0] for r in alerts.rows] == [
        "HighErrorRate", "DiskFilling", "HighErrorRate", "<b>Injected</b>",
    ]  # fmt: skip
    assert alerts.rows[1][2] == "not resolved" and alerts.rows[0][3] == "25 min"
    assert by["anomalies"].rows[0][1] == "http_requests_total"  # score 0.999 first
    logs = by["logs"]
    assert logs.rows[0][:4] == ["api", "GET <*> took <*> ms", "12480", "12000"]
    assert logs.blocks[0].rows[0][:2] == ["checkout", "payment failed for order <*>"]
    assert logs.blocks[0].rows[0][4] == "+7900%"
    slo = {r[0]: r for r in by["slo"].rows}
    assert slo["checkout"][3] == "NO" and float(slo["checkout"][1].split()[0]) < 99
    models = {r[0]: r for r in by["models"].rows}
    assert set(models) == {"churn", "fraud"} and 0.9 < float(models["fraud"][2]) < 0.96
    assert [r[0] for r in by["resources"].rows] == ["node-0", "node-1", "node-2"]
    assert all(len(s.figures) == 1 for k, s in by.items() if k not in ("slo", "performance"))


def test_pdf_report_through_the_cli(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "daily.pdf"
    code, text = run(
        store, "run", "--period", "1d", "--until", str(NOW_MS / 1000), "--out", str(out)
    )
    assert code == 0, text
    assert "7 sections" in text and text.strip().endswith(f"no data: {EMPTY}")
    body = pdftotext(out)
    needles = [
        "Figure: Alerts fired per alert name",
        "Figure: CPU utilization per host",
        "MTTR 15 min",
        "<script>alert(1)</script> <*>",
        "Fastest-growing templates",
    ]
    for needle in (*TITLES, *needles):
        assert needle in body, needle
    subprocess.run(["pdftoppm", "-png", "-r", "50", str(out), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2 and all(p.read_bytes().startswith(b"\x89PNG") for p in pages)


def test_html_report_escapes_the_stores_text(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "daily.html"
    code, text = run(
        store, "run", "--format", "html", "--until", str(NOW_MS / 1000), "--out", str(out)
    )
    assert code == 0, text
    page = out.read_text()
    assert "<script" not in page and "<img src=x" not in page and "<b>Injected" not in page
    assert "&lt;b&gt;Injected&lt;/b&gt;" in page and "&lt;script&gt;alert(1)" in page


def test_a_period_without_data_says_so(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "old.pdf"
    year_ago = NOW_MS / 1000 - 365 * DAY_S
    code, text = run(store, "run", "--until", str(year_ago), "--out", str(out),
                     "--sections", "alerts,anomalies,logs,models")  # fmt: skip
    assert code == 0, text
    body = pdftotext(out)
    assert body.count("No data for this period.") == 4
    assert "Alerts fired" in body and "SLO attainment" not in body


def test_without_a_running_store(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "local.html"
    code, text = run(
        store, "run", "--format", "html", "--sections", "anomalies", "--until",
        str(NOW_MS / 1000), "--out", str(out), url="",
    )  # fmt: skip
    assert code == 0, text
    assert "node_cpu_usage_percent" in out.read_text()
    # an explicit --url that does not answer is an error, not the local store's data
    url = f"http://127.0.0.1:{free_port()}"
    code, text = run(store, "run", "--format", "html", "--sections", "anomalies",
                     "--out", str(tmp_path / "other.html"), url=url)  # fmt: skip
    text = " ".join(text.split())
    assert code == 1 and "no store answers at" in text and url in text, text


def test_bad_options_are_refused(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "x.pdf"
    assert run(store, "run", "--format", "docx", "--out", str(out))[0] == 2
    assert run(store, "run", "--sections", "alerts,nope", "--out", str(out))[0] == 2
    assert run(store, "run", "--period", "soon", "--out", str(out))[0] == 2
    code, text = run(store, "run", "--template", "nope", "--out", str(out))
    assert code == 1 and "no template 'nope'" in text
    assert not out.exists()
    listed = CliRunner().invoke(app, ["templates"])
    assert listed.exit_code == 0 and "default" in listed.output.split()


def test_a_pdf_loads_no_files_or_urls(tmp_path: Path) -> None:
    image = tmp_path / "local.png"
    image.write_bytes(PlotGenerator().generate(data=[], plot_config={"format": "png"}).content)
    template = tmp_path / "t.html.j2"
    template.write_text(
        f'<p>{{{{ title }}}}</p><img src="file://{image}"><img src="{image}">'
        f'<img src="http://127.0.0.1:{free_port()}/x.png">'
        '<link rel="stylesheet" href="file:///etc/passwd">'
    )
    pdf = ReportGenerator().generate({"title": "t"}, template, "pdf").save(tmp_path / "r.pdf")
    listed = subprocess.run(
        ["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True
    ).stdout
    assert len(listed.strip().splitlines()) == 2, listed  # the header only: nothing loaded
    # the same template may embed the image as data
    template.write_text('<img src="data:image/png;base64,{{ b64 }}">')
    b64 = __import__("base64").b64encode(image.read_bytes()).decode()
    pdf = ReportGenerator().generate({"b64": b64}, template, "pdf").save(tmp_path / "d.pdf")
    listed = subprocess.run(
        ["pdfimages", "-list", str(pdf)], capture_output=True, text=True, check=True
    ).stdout
    assert [line.split()[2] for line in listed.splitlines()[2:]] == ["image", "smask"], listed


def test_a_hostile_title_is_text_in_the_pdf(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "titled.pdf"
    title = "R&D <ops>\n} } section { display: none } h1 {"
    code, text = run(store, "run", "--until", str(NOW_MS / 1000), "--sections", "anomalies",
                     "--title", title, "--out", str(out))  # fmt: skip
    assert code == 0, text
    body = pdftotext(out)
    assert "Top anomalies" in body and "http_requests_total" in body  # not hidden by CSS
    footers = [line for line in body.splitlines() if "page 1 of" in line]
    assert footers and "R&D <ops>" in footers[0] and "&amp;" not in body, footers


def test_hostile_text_in_errors_and_bad_times(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "x.pdf"
    code, text = run(store, "run", "--template", str(tmp_path / "[/x]nope"), "--out", str(out))
    text = " ".join(text.split())  # rich wraps long lines
    assert code == 1 and "[/x]nope" in text and "is not a file" in text, text
    for until in ("nan", "inf", "1e30", "-1"):
        code, text = run(store, "run", "--until", until, "--out", str(out))
        assert code == 2 and "--until" in text, (until, text)
    assert not out.exists()


def test_mttr_pairs_each_firing_with_the_next_resolution(store: tuple[VizStore, str]) -> None:
    """Days before the fixture's alerts: one alert resolved (an incident begun before the
    period), then fired (notified twice) and resolved 30 min later, fired again and
    resolved after 10 min. Two incidents, MTTR 20 min; the early resolution is not the
    end of the later incident."""
    t1 = NOW_MS - 3 * DAY_S * 1000
    events = [("resolved", t1 - HOUR), ("firing", t1), ("firing", t1 + 10 * MIN),
              ("resolved", t1 + 30 * MIN), ("firing", t1 + 2 * HOUR),
              ("resolved", t1 + 2 * HOUR + 10 * MIN)]  # fmt: skip
    group = '{}:{alertname="Flapping", severity="warning"}'
    rows = [
        [f"ff{i:014x}", 0, _dt(t), "team", "email-0", "email", "ops@example.com", group, 0,
         status, ["00000000000000ff"], "delivered", 250, "", 10.0, t]
        for i, (status, t) in enumerate(events)
    ]  # fmt: skip
    store[0].client.insert(
        "deliveries", rows,
        column_names=["delivery_id", "attempt", "time", "receiver", "integration", "channel",
                      "target", "group_key", "tier", "status", "fingerprints", "outcome",
                      "http_status", "error", "duration_ms", "version"],
    )  # fmt: skip
    with StoreClient(store[1], TOKEN) as client:
        data = ReportGenerator.collect(
            client, 2 * DAY_S, (t1 + DAY_S * 1000) / 1000, sections=["alerts"]
        )
    alerts = data.sections[0]
    # no alert state stored for these (the delivery log only): nothing acknowledged
    assert alerts.summary == "2 alerts fired; MTTR 20 min; MTTA n/a (none of 0 acknowledged)", (
        alerts.rows
    )
    assert [(r[0], r[3], r[4]) for r in alerts.rows] == [
        ("Flapping", "30 min", "3"), ("Flapping", "10 min", "2"),
    ]  # fmt: skip


def test_adjacent_periods_count_a_boundary_event_once(store: tuple[VizStore, str]) -> None:
    """Periods are half-open, [start, end): an anomaly and an alert exactly at midnight
    belong to the day that starts then, not to both daily reports."""
    midnight = (NOW_MS // (DAY_S * 1000) - 6) * DAY_S * 1000  # days before the fixture's data
    store[0].client.insert(
        "anomalies",
        [[4242, "boundary", "boundary_metric", {}, 10_000, _dt(midnight), 1.0, 0.99, 0.9,
          "hst", "mean", {}]],
        column_names=["series_id", "series", "name", "labels", "window_ms", "ts", "value",
                      "score", "threshold", "detector", "field", "signals"],
    )  # fmt: skip
    group = '{}:{alertname="AtMidnight"}'
    store[0].client.insert(
        "deliveries",
        [["mm" + "0" * 14, 0, _dt(midnight), "team", "email-0", "email", "ops@example.com",
          group, 0, "firing", ["00000000000000mm"], "delivered", 250, "", 10.0, midnight]],
        column_names=["delivery_id", "attempt", "time", "receiver", "integration", "channel",
                      "target", "group_key", "tier", "status", "fingerprints", "outcome",
                      "http_status", "error", "duration_ms", "version"],
    )  # fmt: skip
    found = []
    with StoreClient(store[1], TOKEN) as client:
        for end in (midnight / 1000, midnight / 1000 + DAY_S):
            data = ReportGenerator.collect(client, DAY_S, end, sections=["anomalies", "alerts"])
            found.append([len(s.rows) for s in data.sections])
    assert found == [[0, 0], [1, 1]], found


def test_an_out_path_that_cannot_be_written_is_explained(
    store: tuple[VizStore, str], tmp_path: Path
) -> None:
    code, text = run(store, "run", "--out", str(tmp_path / "no" / "such" / "x.pdf"))
    assert code == 2 and "directory" in text, text
    (tmp_path / "dir.html").mkdir()
    out = tmp_path / "dir.html"
    code, text = run(store, "run", "--format", "html", "--sections", "anomalies",
                     "--until", str(NOW_MS / 1000), "--out", str(out))  # fmt: skip
    assert code == 1 and "cannot write" in text, text


def test_log_template_texts_are_read_for_the_rows_shown_only(
    store: tuple[VizStore, str],
) -> None:
    """3,000 more templates of 1 KiB (a service without lines in the period): the section
    still fits a 1 MiB answer, because it reads the texts of the templates it shows."""
    store[0].client.command(
        "INSERT INTO log_templates (service, template_id, template, change, level, "
        "last_event, first_seen, first_error, size) SELECT 'quiet', toUInt32(number), "
        "repeat('x', 1024), 'none', 'INFO', now64(3), now64(3), toDateTime64(0, 3, 'UTC'), 1 "
        "FROM numbers(3000)"
    )
    with StoreClient(store[1], TOKEN, max_response_bytes=1 << 20) as client:
        data = ReportGenerator.collect(client, DAY_S, NOW_MS / 1000, sections=["logs"])
    logs = data.sections[0]
    assert not logs.error, logs.error
    assert logs.rows[0][:2] == ["api", "GET <*> took <*> ms"]
