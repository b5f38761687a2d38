"""An HTML plot in Debian's chromium (`make chromium`), offline: plotly.js from the page
itself draws the plot, and label values full of markup stay text in the DOM."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from monitoring.plots import PlotGenerator
from monitoring.query.client import Series

pytestmark = pytest.mark.no_broker
HOSTILE = {
    "__name__": "g",
    "svc": "<script>alert('x')</script>",
    "note": '"><img src=x onerror=alert(1)>',
}


class _Dom(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []
        self.text: list[str] = []  # outside script and style elements
        self.current = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.current = tag
        self.handlers += [k for k, _ in attrs if k.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self.current = ""

    def handle_data(self, data: str) -> None:
        if self.current not in ("script", "style"):
            self.text.append(data)


def test_the_plot_draws_offline_and_labels_stay_text(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: run `make chromium`"
    t = 1_780_000_000_000 + 60_000 * np.arange(60, dtype=np.int64)
    data = [Series(HOSTILE, t, np.sin(np.arange(60) / 5)), Series({"__name__": "g"}, t, t * 0.0)]
    page = tmp_path / "plot.html"
    PlotGenerator().generate(data=data, plot_config={"format": "html", "title": "<b>t</b>"}).save(
        page
    )
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
         "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    parsed = _Dom()
    parsed.feed(dom)
    assert parsed.tags.count("svg") >= 2 and 'class="main-svg"' in dom  # plotly drew
    assert "img" not in parsed.tags and parsed.handlers == []
    text = "".join(parsed.text)
    assert "<script>alert('x')</script>" in text and '"><img src=x onerror=alert(1)>' in text
    assert "<b>t</b>" in text  # the title too, shown as typed
