"""Exports of panels and dashboards (``monitoring.ui.export`` through the app's routes,
a stand-in store): real files read back (SVG parsed, PDF through poppler's pdftotext,
Parquet through pyarrow), hostile labels drawn as text, bounds and refusals."""

from __future__ import annotations

import io
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from starlette.testclient import TestClient

from monitoring.ui.dashboards import Panel
from monitoring.ui.export import panel_image, panel_parquet
from unit.test_ui_app import END, HOUR, FakeStore, make_server

HOSTILE = '<script>window.__xss=1</script>"><img src=x onerror=alert(1)>'


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, FakeStore]]:
    fake = FakeStore()
    server = make_server(tmp_path, fake)
    with TestClient(server.app, base_url="http://127.0.0.1") as c:
        yield c, fake
    server.server.sock.close()


def export(c: TestClient, path: str, **params: object) -> httpx.Response:
    q = {"start": END - HOUR, "end": END, "width": 600, **params}
    return c.get(path, params=q)


def pdf_text(data: bytes, tmp_path: Path) -> str:
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: `make pdftools` installs poppler-utils")
    path = tmp_path / "x.pdf"
    path.write_bytes(data)
    return subprocess.run(
        ["pdftotext", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def test_a_panel_exports_as_svg_pdf_png_and_parquet(
    client: tuple[TestClient, FakeStore], tmp_path: Path
) -> None:
    c, _ = client
    svg = export(c, "/api/ui/dashboards/test/panels/rate/export", format="svg")
    assert svg.status_code == 200, svg.text
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert svg.headers["content-disposition"] == 'attachment; filename="test-rate.svg"'
    root = ET.fromstring(svg.content)
    assert root.tag.endswith("svg")
    assert len(root.findall(".//{http://www.w3.org/2000/svg}path")) > 10
    pdf = export(c, "/api/ui/dashboards/test/panels/rate/export", format="pdf")
    assert pdf.content.startswith(b"%PDF")
    text = pdf_text(pdf.content, tmp_path)
    assert "Rate" in text and "s0" in text  # the title and a legend entry
    png = export(c, "/api/ui/dashboards/test/panels/rate/export", format="png")
    assert png.content.startswith(b"\x89PNG")
    pq_resp = export(c, "/api/ui/dashboards/test/panels/rate/export", format="parquet")
    assert pq_resp.headers["content-disposition"].endswith('test-rate.parquet"')
    table = pq.read_table(io.BytesIO(pq_resp.content))
    assert table.column_names == ["series", "labels", "time", "value"]
    assert set(table.column("series").to_pylist()) == {"s0", "s1", "s2"}
    assert str(table.schema.field("time").type) == "timestamp[ms, tz=UTC]"
    assert table.column("value").to_pylist()[0] == 1.0
    assert dict(table.column("labels").to_pylist()[0])["service"] == "s0"
    assert max(t.timestamp() for t in table.column("time").to_pylist()) * 1000 == END


def test_a_table_panel_exports_its_own_columns(client: tuple[TestClient, FakeStore]) -> None:
    c, _ = client
    resp = export(c, "/api/ui/dashboards/test/panels/sql/export", format="parquet")
    table = pq.read_table(io.BytesIO(resp.content))
    assert table.column_names == ["s", "st"] and table.column("s").to_pylist() == ["x"]
    svg = export(c, "/api/ui/dashboards/test/panels/sql/export", format="svg")
    ET.fromstring(svg.content)


def test_a_dashboard_exports_as_one_pdf_and_svg(
    client: tuple[TestClient, FakeStore], tmp_path: Path
) -> None:
    c, fake = client
    pdf = export(c, "/api/ui/dashboards/test/export", format="pdf", width=1200)
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-disposition"] == 'attachment; filename="test.pdf"'
    text = pdf_text(pdf.content, tmp_path)
    assert "Test" in text and "Rate" in text and "UTC" in text
    svg = export(c, "/api/ui/dashboards/test/export", format="svg")
    ET.fromstring(svg.content)
    # a panel whose query fails is drawn with its error, the others still are
    fake.prom_error = (422, "boom in the store")
    pdf = export(c, "/api/ui/dashboards/test/export", format="pdf")
    assert pdf.status_code == 200
    assert "boom in the store" in pdf_text(pdf.content, tmp_path)


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/api/ui/dashboards/test/panels/rate/export", {"format": "html"}, 400),
        ("/api/ui/dashboards/test/panels/rate/export", {"format": "svg", "width": 5}, 400),
        ("/api/ui/dashboards/test/panels/nope/export", {"format": "svg"}, 404),
        ("/api/ui/dashboards/nope/export", {"format": "pdf"}, 404),
        ("/api/ui/dashboards/test/export", {"format": "parquet"}, 400),
        ("/api/ui/dashboards/test/export", {"format": "pdf", "end": "x"}, 400),
    ],
)
def test_bad_exports_are_refused_with_a_reason(
    client: tuple[TestClient, FakeStore], path: str, params: dict[str, object], status: int
) -> None:
    c, _ = client
    resp = export(c, path, **params)
    assert resp.status_code == status
    assert resp.json()["error"]


def test_hostile_labels_are_only_shapes_in_svg_and_text_in_parquet(tmp_path: Path) -> None:
    panel = Panel.model_validate({"id": "p", "title": HOSTILE, "queries": [{"promql": "x"}]})
    frames = [{"kind": "series", "name": HOSTILE, "labels": {"a": HOSTILE}, "start": 0,
               "step": 1000, "v": ["1", None, "NaN", "3"]}]  # fmt: skip
    svg = panel_image(panel, frames, "svg", 600)
    root = ET.fromstring(svg)  # well-formed
    tags = {el.tag.rsplit("}", 1)[-1] for el in root.iter()}
    assert "script" not in tags and "img" not in tags and "foreignObject" not in tags
    assert not any(k.lower().startswith("on") for el in root.iter() for k in el.attrib)
    table = pq.read_table(io.BytesIO(panel_parquet(frames, 3000)))
    assert table.column("series").to_pylist() == [HOSTILE] * 3  # no row where no point
    values = table.column("value").to_pylist()
    assert values[0] == 1.0 and values[1] != values[1] and values[2] == 3.0  # NaN kept
    assert dict(table.column("labels").to_pylist()[0]) == {"a": HOSTILE}


def test_a_label_closing_svgs_text_comment_or_a_megabyte_long_stays_inside_it() -> None:
    """matplotlib writes each text as a comment beside its paths: a ``-->`` in a label
    does not close it, and a 1 MB label is cut (``literal``), not drawn whole (a title
    is at most 200 characters, the dashboard's model refuses more)."""
    breakout = "--><script>alert(1)</script><!-- ]]><![CDATA[<x>\n"
    big = "A" * 1_000_000
    panel = Panel.model_validate({"id": "p", "title": breakout, "queries": [{"promql": "x"}]})
    frames = [{"kind": "series", "name": breakout + big, "labels": {"a": big}, "start": 0,
               "step": 1000, "v": ["1", "2"]}]  # fmt: skip
    svg = panel_image(panel, frames, "svg", 600)
    root = ET.fromstring(svg)  # well-formed
    assert not {el.tag.rsplit("}", 1)[-1] for el in root.iter()} & {"script", "img"}
    assert b"<script" not in svg and len(svg) < 200_000
    assert len(panel_image(panel, frames, "pdf", 600)) < 200_000
