"""monitoring.reports.ReportGenerator on hand-made report data: HTML escaping, empty and
failed sections, templates. (PDFs read back with poppler: tests/integration/test_reports.py.)"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from monitoring.plots import PlotGenerator
from monitoring.reports import ReportData, ReportError, ReportGenerator
from monitoring.reports.sections import Figure, Period, Section

HOSTILE = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'


def report_data() -> ReportData:
    svg = (
        PlotGenerator()
        .generate(data={IMG: ([1, 2, 3], [1.0, 3.0, 2.0])}, plot_config={"format": "svg"})
        .content
    )
    full = Section("alerts", "Alerts fired", summary=f"2 alerts {HOSTILE}")
    full.columns = ["alert", "note"]
    full.rows = [[HOSTILE, IMG], ["DiskFilling", "ok"]]
    full.figures = [Figure(f"caption {IMG}", "svg", svg)]
    full.notes = [f"note {HOSTILE}"]
    empty = Section("models", "Model quality")
    failed = Section("slo", "SLO attainment", error="could not be computed: store down")
    return ReportData(
        "Daily <b>report</b>", Period(1_780_000_000, 1_780_086_400), [full, empty, failed]
    )


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.handlers: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.handlers += [k for k, _ in attrs if k.startswith("on")]


def test_html_escapes_everything_from_data() -> None:
    html = ReportGenerator().generate(data=report_data(), format="html").content.decode()
    assert HOSTILE not in html and "<img src=x" not in html and "<b>report" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    tags = _Tags()
    tags.feed(html)
    assert "script" not in tags.tags and tags.handlers == []
    assert tags.tags.count("img") == 1  # the figure, as a data: URI
    assert 'src="data:image/svg+xml;base64,' in html


def test_empty_and_failed_sections_say_so() -> None:
    html = ReportGenerator().generate(data=report_data(), format="html").html
    models = html[html.index('id="models"') :]
    assert "No data for this period." in models[: models.index("</section>")]
    assert "This section could not be computed: store down" in html


def test_templates_by_name_or_file(tmp_path: Path) -> None:
    gen = ReportGenerator()
    with pytest.raises(ReportError, match="no template 'nope'"):
        gen.generate(data=report_data(), template="nope")
    with pytest.raises(ReportError, match="is not a file"):
        gen.generate(data=report_data(), template="no/such/template.html.j2")
    mine = tmp_path / "mine.html.j2"
    mine.write_text("<h1>{{ title }}</h1>{% for s in sections %}<p>{{ s.title }}</p>{% endfor %}")
    html = gen.generate(data=report_data(), template=mine).html
    assert html.startswith("<h1>Daily &lt;b&gt;report&lt;/b&gt;</h1>")
    bad = tmp_path / "bad.html.j2"
    bad.write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ReportError, match=r"unsafe|__class__"):
        gen.generate(data={"title": ""}, template=bad)
    undefined = tmp_path / "undefined.html.j2"
    undefined.write_text("{{ nothing_here }}")
    with pytest.raises(ReportError, match="nothing_here"):
        gen.generate(data={}, template=undefined)
    with pytest.raises(ReportError, match="format"):
        gen.generate(data=report_data(), format="docx")  # type: ignore[arg-type]


def test_the_title_never_reaches_css() -> None:
    """The page footer repeats the title: from the h1 (CSS string-set), not spliced into
    the <style> element, where HTML escaping means nothing (a newline ends a CSS string,
    ``&amp;`` is shown as such)."""
    title = "R&D \\\n} } section { display: none } h1 {"
    data = ReportData(title, Period(1_780_000_000, 1_780_086_400), [Section("a", "Alerts")])
    html = ReportGenerator().generate(data=data, format="html").html
    style = html[html.index("<style>") : html.index("</style>")]
    assert "R&" not in style and "display: none" not in style, style
    assert "<h1>R&amp;D" in html


@pytest.mark.parametrize(
    "source", ["{{ 1 / 0 }}", "{{ range(100001) | list }}", "{{ [][3] }}", "{{ 'a' + 1 }}"]
)
def test_a_template_that_fails_while_rendering_is_a_report_error(
    tmp_path: Path, source: str
) -> None:
    """A template is code a user chose: what it raises is a ReportError with the reason
    (the CLI prints it), not an exception of any kind (a traceback)."""
    template = tmp_path / "failing.html.j2"
    template.write_text(source)
    with pytest.raises(ReportError, match=r"failing\.html\.j2"):
        ReportGenerator().generate(data={}, template=template)
