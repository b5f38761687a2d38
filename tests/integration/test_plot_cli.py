"""`monitoring plot` on a chDB store: through a running store's query server (with its
token), and through the in-process server when no store answers. No Kafka broker."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from fixtures.prometheus import free_port
from fixtures.viz_store import HOUR, VizStore, served_viz_store
from typer.testing import CliRunner

from monitoring.cli import plot as plot_cli

pytestmark = pytest.mark.no_broker
TOKEN = "plot-t0ken-2207"
NOW_MS = int(time.time() * 1000) // HOUR * HOUR

app = typer.Typer()
plot_cli.register(app)
app.command("unused")(lambda: None)  # two commands: typer keeps `plot` as a sub-command


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VizStore, str]]:
    with served_viz_store(tmp_path_factory.mktemp("plot"), NOW_MS, TOKEN) as served:
        yield served


def run(store: tuple[VizStore, str], *args: str, url: str | None = None) -> tuple[int, str]:
    """``monitoring plot`` at ``--url`` (the store's by default); ``url=""``: no ``--url``,
    the settings' endpoint, where nothing listens."""
    env = {
        "MONITORING_API__TOKEN": TOKEN, "MONITORING_STORAGE__DSN": store[0].settings.storage.dsn,
        "MONITORING_STORAGE__QUERY_PORT": str(free_port()),
    }  # fmt: skip
    where = [] if url == "" else ["--url", url or store[1]]
    result = CliRunner().invoke(
        app, ["plot", *args, *where, "--until", str(NOW_MS / 1000)], env=env
    )
    return result.exit_code, result.output


def test_promql_line_to_png(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "cpu.png"
    code, text = run(store, "node_cpu_usage_percent", "--out", str(out), "--unit", "%")
    assert code == 0, text
    assert out.read_bytes().startswith(b"\x89PNG") and "3 series" in text


def test_histogram_heatmap_to_svg(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "latency.svg"
    query = "sum by (le) (rate(request_duration_seconds_bucket[5m]))"
    code, text = run(store, query, "--type", "heatmap", "--since", "2h", "--out", str(out))
    assert code == 0, text
    assert ET.parse(out).getroot().tag.endswith("svg") and "5 series" in text


def test_sql_with_time_range_to_html(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "anomalies.html"
    sql = (
        "SELECT name, count() AS anomalies, max(score) AS top FROM anomalies FINAL "
        "WHERE ts BETWEEN {start:DateTime64(3)} AND {end:DateTime64(3)} GROUP BY name "
        "ORDER BY name"
    )
    code, text = run(store, sql, "--type", "bar", "--since", "1d", "--out", str(out))
    assert code == 0, text
    page = out.read_text()
    assert "Plotly.newPlot" in page and "node_cpu_usage_percent" in page
    assert "<script>alert" not in page and "<img src=x" not in page


def test_without_a_running_store(store: tuple[VizStore, str], tmp_path: Path) -> None:
    out = tmp_path / "up.pdf"
    code, text = run(store, "up", "--since", "2h", "--out", str(out), url="")
    assert code == 0, text
    assert out.read_bytes().startswith(b"%PDF-") and "2 series" in text


def test_an_explicit_url_that_does_not_answer_is_an_error(
    store: tuple[VizStore, str], tmp_path: Path
) -> None:
    """--url names the store to ask: when it does not answer, the plot is not quietly made
    from the local chDB directory instead (another store's data)."""
    out = tmp_path / "up.png"
    url = f"http://127.0.0.1:{free_port()}"
    code, text = run(store, "up", "--out", str(out), url=url)
    text = " ".join(text.split())
    assert code == 1 and "no store answers at" in text and url in text, text
    assert not out.exists()


def test_errors_are_explained(store: tuple[VizStore, str], tmp_path: Path) -> None:
    code, text = run(store, "rate(x[5m]", "--out", str(tmp_path / "x.png"))
    assert code == 1 and "query failed" in text and "parse error" in text
    code, text = run(store, "up", "--out", str(tmp_path / "x.gif"))
    assert code == 2 and "--out must end in" in text
    code, text = run(store, "up", "--type", "pie", "--out", str(tmp_path / "x.png"))
    assert code == 2 and "bad plot options" in text
    code, text = run(store, "up", "--since", "forever", "--out", str(tmp_path / "x.png"))
    assert code == 2
    assert not (tmp_path / "x.png").exists()


def test_hostile_text_in_errors_is_printed_as_it_is(
    store: tuple[VizStore, str], tmp_path: Path
) -> None:
    """Error messages carry the store's text (which quotes the query) and file names:
    printed literally, never read as rich markup (``[/x]`` used to crash the CLI)."""
    code, text = run(store, "SELECT '[/x]' FROM nowhere", "--out", str(tmp_path / "x.png"))
    assert code == 1 and "query failed" in text and "nowhere" in text, text
    code, text = run(store, "up", "--out", str(tmp_path / "[bold]x.gif"))
    assert code == 2 and "[bold]x.gif" in text, text


def test_data_that_cannot_be_plotted_or_bad_times_are_explained(
    store: tuple[VizStore, str], tmp_path: Path
) -> None:
    out = tmp_path / "x.png"
    code, text = run(store, "SELECT 'a' AS name, 'b' AS other", "--out", str(out))
    assert code == 2 and "cannot plot" in text and "no numeric column" in text, text
    for until in ("nan", "inf", "1e30", "-1"):
        env = {"MONITORING_API__TOKEN": TOKEN}
        result = CliRunner().invoke(
            app, ["plot", "up", "--out", str(out), "--url", store[1], "--until", until], env=env
        )
        assert result.exit_code == 2 and "--until" in result.output, (until, result.output)
    assert not out.exists()


def test_an_out_path_that_cannot_be_written_is_explained(
    store: tuple[VizStore, str], tmp_path: Path
) -> None:
    code, text = run(store, "up", "--out", str(tmp_path / "no" / "such" / "x.png"))
    assert code == 2 and "directory" in text and "Traceback" not in text, text
    (tmp_path / "dir.png").mkdir()
    code, text = run(store, "up", "--since", "2h", "--out", str(tmp_path / "dir.png"))
    assert code == 1 and "cannot write" in text, text
