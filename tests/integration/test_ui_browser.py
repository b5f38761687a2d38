"""The dashboards in a real browser: Debian's chromium, driven by Playwright, against
`monitoring ui` reading a real store query server on chDB (:mod:`fixtures.ui_world`).

For every shipped dashboard: no console errors, every panel draws data (plotly's
traces, or table rows); changing the time range and a variable refetches and redraws;
a window stored now reaches the page by server push; label values, alert groups and
table cells holding ``<script>`` and ``"><img onerror=...>`` are shown as text and
nothing runs. Screenshots go to ``.data/test-artifacts/ui/`` for people to look at.

Needs ``/usr/bin/chromium`` (``make chromium``); no Kafka.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fixtures.ui_world import HOSTILE, HOSTILE_LINES, INTERVAL_MS, UiWorld
from prometheus_client import CollectorRegistry

from monitoring.config import UiSettings
from monitoring.ui.dashboards import SHIPPED_DIR, DashboardStore
from monitoring.ui.server import UiServer

pytestmark = pytest.mark.no_broker

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = Path(__file__).resolve().parents[2] / ".data" / "test-artifacts" / "ui"
SHIPPED = DashboardStore("/nonexistent", SHIPPED_DIR).names()
PANELS_DONE = (
    "() => { const ps = [...document.querySelectorAll('.panel')];"
    " return ps.length > 0 && ps.every(p => p.dataset.state !== 'loading'); }"
)


def wait_until(page: Any, check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Poll ``check`` until it is true; the page's events are delivered meanwhile
    (Playwright's sync API dispatches them only inside its own calls)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        page.wait_for_timeout(50)


class Ui:
    def __init__(self, world: UiWorld, server: UiServer, browser: Any) -> None:
        self.world = world
        self.server = server
        self.browser = browser

    def page(self) -> tuple[Any, list[str], list[str]]:
        """A new page, its console errors and the panel requests it makes."""
        page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
        page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
        page.on("request", lambda r: requests.append(r.url) if "/panels/" in r.url else None)
        return page, errors, requests


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ui]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium`")
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("ui")
    world = UiWorld.start(tmp)
    ui_settings = UiSettings.model_validate({
        **world.settings.ui.model_dump(), "store_url": world.store_url,
        "dashboards_dir": str(tmp / "dashboards"), "live_poll": "200ms",
    })  # fmt: skip
    settings = world.settings.model_copy(update={"ui": ui_settings})
    server = UiServer(settings, CollectorRegistry(), "127.0.0.1", 0).start()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            try:
                yield Ui(world, server, browser)
            finally:
                browser.close()
    finally:
        server.stop()
        world.stop()


def panel_states(page: Any) -> dict[str, tuple[str, int]]:
    got = page.evaluate(
        "() => [...document.querySelectorAll('.panel')].map(p =>"
        " [p.dataset.panel, p.dataset.state, Number(p.dataset.traces), p.dataset.type,"
        "  p.querySelector('.js-plotly-plot') ? p.querySelector('.js-plotly-plot').data.length"
        "  : p.querySelectorAll('tbody tr, .stat-item, .log-line').length,"
        "  p.querySelector('.note').textContent])"
    )
    return {pid: (state, drawn, kind, note) for pid, state, _, kind, drawn, note in got}


def assert_nothing_ran(page: Any, errors: list[str]) -> None:
    assert page.evaluate("() => window.__xss") is None
    assert (
        page.evaluate("() => document.querySelectorAll('img[src=\"x\"], img[src=x]').length") == 0
    )
    scripts = page.evaluate("() => [...document.scripts].map(s => s.getAttribute('src'))")
    assert all(s and s.startswith("/static/") for s in scripts), scripts
    assert not [e for e in errors if e.startswith("dialog")], errors


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_dashboard_draws_every_panel(ui: Ui, name: str) -> None:
    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/{name}?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    states = panel_states(page)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    assert states, "no panels"
    empty = {pid: s for pid, s in states.items() if s[0] != "ok" or s[1] < 1}
    assert not empty, empty  # every panel drew traces, rows or stats
    assert errors == [], errors
    assert_nothing_ran(page, errors)
    page.close()


def test_the_home_page_lists_dashboards_alerts_and_health(ui: Ui) -> None:
    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/")
    page.wait_for_selector("#health table")
    links = page.eval_on_selector_all("#dashboards a", "as => as.map(a => a.textContent)")
    assert {"Services", "System", "Models", "Pipeline", "Alerts"} <= set(links)
    alerts = page.inner_text("#alerts")
    assert "HighErrorRate" in alerts
    assert "<img src=x onerror=window.__xss=4>" in alerts  # shown as text
    assert "ok" in page.inner_text("#health")
    page.screenshot(path=str(ARTIFACTS / "home.png"), full_page=True)
    assert errors == [], errors
    assert_nothing_ran(page, errors)
    page.close()


def test_changing_the_time_range_and_a_variable_refetches_and_redraws(ui: Ui) -> None:
    page, errors, requests = ui.page()
    page.goto(f"{ui.server.url}/d/services?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    steps_1h = {pid: page.get_attribute(f'[data-panel="{pid}"]', "data-step")
                for pid in ("request_rate", "latency_percentiles")}  # fmt: skip
    before = len(requests)

    page.select_option("#range", "6h")
    wait_until(page, lambda: len(requests) >= before + 8, what="panel requests for 6 h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    spans = {
        int(m.group(2)) - int(m.group(1))
        for u in requests[before:]
        if (m := re.search(r"start=(\d+)&end=(\d+)", u))
    }
    assert spans == {6 * 3_600_000}
    assert "last=6h" in page.url
    for pid, step in steps_1h.items():  # a longer range, a longer step: same pixel budget
        assert int(page.get_attribute(f'[data-panel="{pid}"]', "data-step")) > int(step or 0)
    states = panel_states(page)
    assert all(s[0] == "ok" for s in states.values()), states

    before = len(requests)
    page.wait_for_selector('select[data-var="service"][data-loaded]', state="attached")
    page.select_option('select[data-var="service"]', "api")
    wait_until(page, lambda: len(requests) >= before + 8, what="panel requests for service=api")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    assert all("var-service=api" in u for u in requests[before:])
    names = page.evaluate(
        "() => document.querySelector('[data-panel=\"request_rate\"] .js-plotly-plot')"
        ".data.filter(t => t.yaxis !== 'y2').map(t => t.name)"  # not the alert markers
    )
    assert names == ["api"]
    page.screenshot(path=str(ARTIFACTS / "services-api-6h.png"), full_page=True)
    assert errors == [], errors
    page.close()


def test_a_new_window_reaches_the_page_by_server_push(ui: Ui) -> None:
    page, errors, requests = ui.page()
    page.goto(f"{ui.server.url}/d/pipeline?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    page.select_option("#refresh", "0")  # no timer: only the push may refetch
    page.wait_for_selector("body[data-live-end]")  # the stream's first event: the current end
    before = len(requests)
    newest = int(time.time() * 1000) - 1  # a window that closed just now
    ui.world.add_window(newest)
    page.wait_for_selector(f'body[data-live-end="{newest}"]', timeout=20_000)
    wait_until(
        page, lambda: len(requests) >= before + 7, timeout=20, what="a refetch after the push"
    )
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    assert all(s[0] == "ok" for s in panel_states(page).values())
    assert errors == [], errors
    page.close()


def test_hostile_label_values_are_shown_as_text_and_never_run(ui: Ui) -> None:
    page, errors, _ = ui.page()
    end = ui.world.end_ms  # "Busiest cores now" at the data's end: "now" may be minutes later
    page.goto(f"{ui.server.url}/d/system?from={end - 3_600_000}&to={end}")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    page.wait_for_selector('select[data-var="host"][data-loaded]', state="attached")
    options = page.eval_on_selector_all(
        'select[data-var="host"] option', "os => os.map(o => o.textContent)"
    )
    assert set(HOSTILE) <= set(options)  # in the variable's list, as text
    table = page.inner_text('[data-panel="busiest_cores"]')
    assert "<script>window.__xss = 1</script>" in table
    assert HOSTILE[0] in page.inner_text('[data-panel="filesystems"]')  # an instance label
    legend = page.evaluate(
        "() => [...document.querySelectorAll('[data-panel=\"cpu_by_host\"] .legendtext')]"
        ".map(t => t.textContent)"
    )
    assert set(HOSTILE) <= set(legend), legend  # plotly drew them as text
    hover = page.evaluate(
        "() => document.querySelector('[data-panel=\"cpu_by_host\"] .js-plotly-plot')"
        ".data.filter(t => t.yaxis === 'y2').flatMap(t => t.hovertext)"
    )
    assert any("&lt;script&gt;window.__xss = 7&lt;/script&gt;" in h for h in hover), hover
    shapes = page.evaluate(
        "() => document.querySelector('[data-panel=\"cpu_by_host\"] .js-plotly-plot')"
        ".layout.shapes.map(s => s.type)"
    )
    # the anomaly annotations, one line each; the two alert incidents' bands, firing and
    # pending
    assert shapes.count("line") == 11 and shapes.count("rect") == 4, shapes
    page.select_option('select[data-var="host"]', HOSTILE[1])
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    assert panel_states(page)["cpu_by_host"][0] == "ok"  # the value is matched literally
    page.screenshot(path=str(ARTIFACTS / "hostile-labels.png"), full_page=True)
    assert_nothing_ran(page, errors)
    assert errors == [], errors
    page.close()


def test_log_lines_are_searched_and_hostile_lines_shown_as_text(ui: Ui) -> None:
    page, errors, requests = ui.page()
    page.goto(f"{ui.server.url}/d/logs?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    lines = page.eval_on_selector_all(
        '[data-panel="recent_lines"] .log-msg', "ms => ms.map(m => m.textContent)"
    )
    assert set(HOSTILE_LINES) <= set(lines)
    before = len(requests)
    page.fill('input[data-var="search"]', "PAYMENT")
    page.press('input[data-var="search"]', "Enter")
    wait_until(page, lambda: len(requests) >= before + 5, what="refetch for the search")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    lines = page.eval_on_selector_all(
        '[data-panel="recent_lines"] .log-msg', "ms => ms.map(m => m.textContent)"
    )
    assert lines and all("payment" in line for line in lines), lines
    assert "var-search=PAYMENT" in page.url
    page.screenshot(path=str(ARTIFACTS / "logs-search.png"), full_page=True)
    assert_nothing_ran(page, errors)
    assert errors == [], errors
    page.close()


def test_zooming_a_chart_sets_an_absolute_range_and_refetches(ui: Ui) -> None:
    page, errors, requests = ui.page()
    page.goto(f"{ui.server.url}/d/services?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    before = len(requests)
    end = ui.world.end_ms - 5 * 60_000
    start = end - 10 * 60_000
    page.evaluate(
        "([a, b]) => Plotly.relayout(document.querySelector("
        "'[data-panel=\"request_rate\"] .js-plotly-plot'),"
        " {'xaxis.range[0]': new Date(a).toISOString().replace('T', ' ').replace('Z', ''),"
        "  'xaxis.range[1]': new Date(b).toISOString().replace('T', ' ').replace('Z', '')})",
        [start, end],
    )
    wait_until(page, lambda: len(requests) >= before + 8, what="panel requests for the zoom")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    assert all(f"start={start}&end={end}" in u for u in requests[before:]), requests[before:]
    assert f"from={start}" in page.url and f"to={end}" in page.url
    assert all(s[0] == "ok" for s in panel_states(page).values())
    assert errors == [], errors
    page.close()


def test_with_a_token_the_browser_signs_in_with_basic_auth(ui: Ui, tmp_path: Path) -> None:
    from pydantic import SecretStr

    token = "ui-browser-t0ken"
    settings = ui.server.ui.ui  # the running UI's settings section
    full = ui.world.settings.model_copy(
        update={
            "ui": settings,
            "api": ui.world.settings.api.model_copy(update={"token": SecretStr(token)}),
        }
    )
    guarded = UiServer(full, CollectorRegistry(), "127.0.0.1", 0).start()
    try:
        resp = httpx.get(f"{guarded.url}/d/services")
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Basic realm="monitoring ui"'
        context = ui.browser.new_context(http_credentials={"username": "me", "password": token})
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{guarded.url}/d/services?last=1h")
        page.wait_for_function(PANELS_DONE, timeout=30_000)
        assert all(s[0] == "ok" for s in panel_states(page).values())
        page.wait_for_selector("body[data-live-end]")  # the event stream signed in too
        assert errors == [], errors
        context.close()
    finally:
        guarded.stop()


def test_the_grafana_button_downloads_the_dashboard_s_json(ui: Ui) -> None:
    import json

    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/pipeline?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    with page.expect_download() as info:
        page.click("#grafana")
    download = info.value
    assert download.suggested_filename == "pipeline.grafana.json"
    target = ARTIFACTS / download.suggested_filename
    download.save_as(target)
    model = json.loads(target.read_text())
    assert model["title"] == "Pipeline" and model["schemaVersion"] == 39
    assert errors == [], errors
    page.close()


def test_a_panel_exports_csv_and_png(ui: Ui) -> None:
    import csv
    import io

    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/system?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    with page.expect_download() as info:
        page.click('[data-panel="busiest_cores"] button.csv')
    download = info.value
    assert download.suggested_filename == "system-busiest_cores.csv"
    target = ARTIFACTS / download.suggested_filename
    download.save_as(target)
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["series", "value"] and len(rows) == 11
    names = [r[0] for r in rows[1:]]
    assert any(n.startswith("'=HYPERLINK") for n in names), names  # no live formula
    assert not any(n.startswith("=") for n in names)

    with page.expect_download() as info:
        page.click('[data-panel="cpu_by_host"] button.csv')
    series = list(csv.reader(io.StringIO(info.value.path().read_text())))
    assert series[0] == ["series", "time", "value"] and len(series) > 100

    page.hover('[data-panel="cpu_by_host"] .js-plotly-plot')
    with page.expect_download() as info:
        page.click('[data-panel="cpu_by_host"] .modebar-btn[data-title*="png" i]')
    png = info.value
    assert png.suggested_filename == "system-cpu_by_host.png"
    png.save_as(ARTIFACTS / png.suggested_filename)
    assert (ARTIFACTS / png.suggested_filename).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert errors == [], errors
    page.close()


def test_firing_alerts_are_bands_on_the_series_they_match(ui: Ui) -> None:
    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/system?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    bands = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.panel[data-bands]')]"
        ".map(p => [p.dataset.panel, Number(p.dataset.bands)]))"
    )
    # HighCPU{host="node-000"} and the hostile alert on a hostile host, each pending then
    # firing: both match the panels split by host (node-000 only the memory panel's)
    assert bands.get("cpu_by_host") == 4 and bands.get("memory_by_host") == 2, bands
    shapes = page.evaluate(
        "() => document.querySelector('[data-panel=\"cpu_by_host\"] .js-plotly-plot')"
        ".layout.shapes.filter(s => s.type === 'rect').map(s => [s.x0, s.x1, s.fillcolor])"
    )
    end = ui.world.end_ms
    firing, pending = "rgba(242, 73, 92, 0.15)", "rgba(255, 152, 48, 0.10)"
    assert [end - 1_800_000, end - 1_200_000, firing] in shapes  # fired, resolved
    assert [end - 1_920_000, end - 1_800_000, pending] in shapes  # pending until it fired
    hover = page.evaluate(
        "() => document.querySelector('[data-panel=\"cpu_by_host\"] .js-plotly-plot')"
        ".data.find(t => t.name === 'alerts').hovertext"
    )
    assert "HighCPU firing, acknowledged by ann" in hover
    assert any("&lt;script&gt;" in h and "(not resolved)" in h for h in hover), hover
    page.hover('[data-panel="cpu_by_host"] .js-plotly-plot')
    assert_nothing_ran(page, errors)
    assert errors == [], errors

    page.goto(f"{ui.server.url}/d/alerts?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    states = panel_states(page)
    assert states["incidents"][0] == "ok" and states["incidents"][1] == 2, states
    cells = page.locator('[data-panel="incidents"] tbody').inner_text()
    assert "HighCPU" in cells and HOSTILE[1] in cells and "window.__xss = 7" in cells
    # MTTA: acknowledged 3 and 5 min after firing
    stats = page.locator('[data-panel="mtta_mttr"] .stat-item').all_inner_texts()
    assert len(stats) == 2 and "4" in stats[0], stats
    assert_nothing_ran(page, errors)
    page.screenshot(path=str(ARTIFACTS / "alerts-incidents.png"), full_page=True)
    assert errors == [], errors
    page.close()


def test_the_export_buttons_download_svg_pdf_and_parquet(ui: Ui) -> None:
    import io
    import shutil
    import subprocess
    import xml.etree.ElementTree as ET

    import pyarrow.parquet as pq

    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: `make pdftools` installs poppler-utils")

    def pdf_text(path: Path) -> str:
        return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True,
                              check=True).stdout  # fmt: skip

    def no_script(path: Path) -> ET.Element:
        root = ET.fromstring(path.read_bytes())
        tags = {e.tag.rsplit("}", 1)[-1] for e in root.iter()}
        assert root.tag.endswith("svg") and not tags & {"script", "img", "foreignObject"}
        assert not any(k.lower().startswith("on") for e in root.iter() for k in e.attrib)
        return root

    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/system?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    saved = {}
    for selector, filename in [
        ('[data-panel="cpu_by_host"] button[data-export="svg"]', "system-cpu_by_host.svg"),
        ('[data-panel="cpu_by_host"] button[data-export="pdf"]', "system-cpu_by_host.pdf"),
        ('[data-panel="cpu_by_host"] button[data-export="parquet"]',
         "system-cpu_by_host.parquet"),
        ("#export-pdf", "system.pdf"),
        ("#export-svg", "system.svg"),
    ]:  # fmt: skip
        page.hover(selector)
        with page.expect_download(timeout=60_000) as info:
            page.click(selector)
        download = info.value
        assert download.suggested_filename == filename
        saved[filename] = target = ARTIFACTS / filename
        download.save_as(target)
    # the panel's SVG: its shapes, no markup from the hostile host labels
    svg = no_script(saved["system-cpu_by_host.svg"])
    assert len([e for e in svg.iter() if e.tag.endswith("path")]) > 20
    assert "CPU use by host" in pdf_text(saved["system-cpu_by_host.pdf"])
    table = pq.read_table(io.BytesIO(saved["system-cpu_by_host.parquet"].read_bytes()))
    assert table.column_names == ["series", "labels", "time", "value"]
    assert table.num_rows > 100
    hosts = {dict(ls).get("host") for ls in table.column("labels").to_pylist()}
    assert set(HOSTILE) <= hosts  # hostile label values kept verbatim, as data
    whole = pdf_text(saved["system.pdf"])
    for title in ("System", "CPU use by host", "Memory used by host", "Busiest cores now"):
        assert title in whole, title
    no_script(saved["system.svg"])
    assert errors == [], errors
    page.close()


def test_a_dashboard_made_by_dashboard_creator_draws_every_panel(ui: Ui) -> None:
    from monitoring.ui import DashboardCreator

    DashboardCreator(ui.server.ui.dashboards).create(
        metrics=[
            {"name": "http_requests_total", "group_by": ["service"]},
            {"name": "http_request_duration_seconds", "kind": "histogram"},
            {"name": "node_cpu_usage_percent", "group_by": ["host"]},
            "node_memory_used_bytes",
            {"name": "model_inference_latency_ms", "group_by": ["model"]},
            {"name": "orders_total", "group_by": ["region"]},
        ],
        layout="grid",
        title="Generated",
        save="generated",
    )
    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/generated?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    states = panel_states(page)
    assert len(states) == 6
    assert all(s[0] == "ok" and s[1] >= 1 for s in states.values()), states
    page.screenshot(path=str(ARTIFACTS / "generated.png"), full_page=True)
    assert errors == [], errors
    page.close()


HOVER_STATE = """() => Object.fromEntries([...document.querySelectorAll('.panel')].flatMap(p => {
  const d = p.querySelector('.js-plotly-plot');
  const xa = d && d._fullLayout && d._fullLayout.xaxis;
  if (!xa || xa.type !== 'date') return [];
  const r = d.getBoundingClientRect();
  if (r.bottom < 0 || r.top > innerHeight) return [];
  const xs = (d._hoverdata || []).filter(h => h.data.yaxis !== 'y2')  // not the markers
    .map(h => h.xaxis.d2c(h.x)).filter(Number.isFinite);
  return [[p.dataset.panel, {xs, step: Number(p.dataset.step) * 1000,
    labels: d.querySelectorAll('.hoverlayer > *').length}]];
}))"""


def test_hovering_one_time_series_shows_the_same_time_on_the_others(ui: Ui) -> None:
    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/system?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    area = page.locator('[data-panel="cpu_by_host"] .nsewdrag').bounding_box()
    assert area is not None
    page.mouse.move(area["x"] + area["width"] * 0.6, area["y"] + area["height"] / 2)
    cursor = page.evaluate(  # the time under the mouse (the drag cover is the plot area)
        "(px) => document.querySelector('[data-panel=\"cpu_by_host\"] .js-plotly-plot')"
        "._fullLayout.xaxis.p2c(px)",
        area["width"] * 0.6,
    )

    def hovered() -> dict[str, Any] | None:
        got = page.evaluate(HOVER_STATE)
        return got if len(got) >= 3 and all(p["xs"] for p in got.values()) else None

    panels = wait_until(page, hovered, what="a hover on every time series panel in view")
    assert {"cpu_by_host", "memory_by_host"} <= set(panels), panels
    for pid, p in panels.items():  # each at its nearest point to the cursor's time
        near = max(p["step"], INTERVAL_MS)  # the samples are 15 s apart
        assert p["labels"] > 0, (pid, p)
        assert all(abs(x - cursor) <= near for x in p["xs"]), (pid, cursor, p)
    page.screenshot(path=str(ARTIFACTS / "crosshair.png"))

    page.mouse.move(5, 5)  # off the chart: every panel lets go
    wait_until(
        page,
        lambda: not any(p["xs"] for p in page.evaluate(HOVER_STATE).values()),
        what="the crosshair gone",
    )
    assert errors == [], errors
    page.close()


def test_pending_alerts_are_lighter_bands_and_listed_with_the_firing_ones(ui: Ui) -> None:
    page, errors, _ = ui.page()
    page.goto(f"{ui.server.url}/d/system?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    hover = page.evaluate(
        "() => document.querySelector('[data-panel=\"cpu_by_host\"] .js-plotly-plot')"
        ".data.find(t => t.name === 'pending alerts').hovertext"
    )
    assert "HighCPU pending" in hover
    assert any(h.startswith("&lt;script&gt;window.__xss = 7") for h in hover), hover
    page.close()

    page, errors, _ = ui.page()  # HighLatency{service="api"}: pending now, on its service
    page.goto(f"{ui.server.url}/d/services?last=1h")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    bands = page.evaluate(
        "() => document.querySelector('[data-panel=\"request_rate\"] .js-plotly-plot')"
        ".layout.shapes.filter(s => s.type === 'rect').map(s => [s.x0, s.x1, s.fillcolor])"
    )
    end = ui.world.end_ms
    # still pending at its last sample (the world's end): drawn until the next evaluation
    assert bands == [[end - 50_000, end + 10_000, "rgba(255, 152, 48, 0.10)"]], bands
    page.close()

    page, errors, _ = ui.page()  # "Active alerts now" at the data's end, not minutes later
    page.goto(f"{ui.server.url}/d/alerts?from={end - 3_600_000}&to={end}")
    page.wait_for_function(PANELS_DONE, timeout=30_000)
    rows = page.eval_on_selector_all(
        '[data-panel="active_alerts"] tbody tr',
        "rs => rs.map(r => [...r.querySelectorAll('td')].map(td => td.textContent))",
    )
    cols = page.eval_on_selector_all(
        '[data-panel="active_alerts"] thead th', "hs => hs.map(h => h.textContent)"
    )
    table = [dict(zip(cols, r, strict=True)) for r in rows]
    assert sorted((r["alertname"], r["alertstate"]) for r in table) == [
        ("<script>window.__xss = 7</script>", "firing"),  # shown as text
        ("HighLatency", "pending"),
    ], table
    stats = page.inner_text('[data-panel="active_by_state"]')
    assert "firing" in stats and "pending" in stats
    page.screenshot(path=str(ARTIFACTS / "alerts-pending.png"), full_page=True)
    assert_nothing_ran(page, errors)
    assert errors == [], errors
    page.close()
