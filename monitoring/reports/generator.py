"""``ReportGenerator().generate(data=..., template=...)``: reports as HTML or PDF.

Templates are Jinja2 files, the package's own (``templates/<name>.html.j2``, by name) or
a user's file (by path), rendered in Jinja2's sandbox with autoescaping always on: a
label value, log template or alert name in the data is text, never markup. Figures are
embedded as ``data:`` URIs (SVG in an ``<img>``, where a script could not run anyway).
PDF is WeasyPrint (Debian's Pango) over the same HTML, with a URL fetcher that loads
``data:`` URIs only: a template cannot pull in a local file or a remote URL.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from monitoring.query.client import StoreClient
from monitoring.reports.sections import Period, Section, Sections, fmt_duration

TEMPLATES = Path(__file__).parent / "templates"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_TEMPLATE_BYTES = 256 * 1024
ReportFormat = Literal["html", "pdf"]


class ReportError(ValueError):
    """A template or format that cannot be used; the message says why."""


@dataclass
class ReportData:
    """What the shipped templates show: a title, the period and its sections."""

    title: str
    period: Period
    sections: list[Section] = field(default_factory=list)
    generated_s: float = field(default_factory=time.time)

    def context(self) -> dict[str, Any]:
        """The template's variables."""
        return {
            "title": self.title,
            "period_start": _when(self.period.start_s),
            "period_end": _when(self.period.end_s),
            "period_length": fmt_duration(self.period.seconds),
            "generated": _when(self.generated_s),
            "sections": [_section(s) for s in self.sections],
        }


@dataclass(frozen=True)
class Report:
    """A rendered report."""

    content: bytes
    format: str
    html: str

    @property
    def media_type(self) -> str:
        return "application/pdf" if self.format == "pdf" else "text/html; charset=utf-8"

    def save(self, path: str | Path) -> Path:
        """Write the report to ``path``."""
        out = Path(path)
        out.write_bytes(self.content)
        return out


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _section(s: Section) -> dict[str, Any]:
    return {
        "key": s.key,
        "title": s.title,
        "summary": s.summary,
        "columns": s.columns,
        "rows": s.rows,
        "notes": s.notes,
        "error": s.error,
        "empty": s.empty,
        "blocks": [{"caption": b.caption, "columns": b.columns, "rows": b.rows} for b in s.blocks],
        "figures": [
            {
                "caption": f.caption,
                "data_uri": f"data:image/{'svg+xml' if f.format == 'svg' else f.format};base64,"
                + base64.b64encode(f.content).decode(),
            }
            for f in s.figures
        ],
    }


def template_names() -> list[str]:
    """The package's templates, by name."""
    return sorted(p.name.removesuffix(".html.j2") for p in TEMPLATES.glob("*.html.j2"))


class ReportGenerator:
    """Reports from :class:`ReportData` (or any mapping a custom template reads)."""

    def __init__(self) -> None:
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(str(TEMPLATES)),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @staticmethod
    def collect(
        client: StoreClient,
        period_s: float,
        end_s: float | None = None,
        title: str = "",
        sections: list[str] | None = None,
        slo_target: float = 0.999,
    ) -> ReportData:
        """The shipped sections for the ``period_s`` seconds up to ``end_s`` (now)."""
        end = time.time() if end_s is None else end_s
        period = Period(end - period_s, end)
        found = Sections(client, period, slo_target).all(sections)
        name = title or f"Monitoring report: {fmt_duration(period_s)} to {_when(end)}"
        return ReportData(name, period, found)

    def generate(
        self,
        data: ReportData | Mapping[str, Any],
        template: str | Path = "default",
        format: ReportFormat = "html",
    ) -> Report:
        """Render ``data`` with ``template`` (a package template's name or a file's path)
        to HTML or PDF."""
        if format not in ("html", "pdf"):
            raise ReportError(f"format must be html or pdf, not {format!r}")
        context = data.context() if isinstance(data, ReportData) else dict(data)
        try:
            html = self._template(template).render(**context)
        except TemplateError as e:  # undefined names, the sandbox's refusals
            raise ReportError(f"template {str(template)!r}: {e}") from None
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as e:
            # a template is code: what it raises is its failure, said with the reason
            raise ReportError(
                f"template {str(template)!r} failed: {type(e).__name__}: {e}"
            ) from None
        if format == "html":
            return Report(html.encode(), "html", html)
        return Report(to_pdf(html), "pdf", html)

    def check_template(self, template: str | Path) -> None:
        """ReportError unless ``template`` loads (before any query runs)."""
        self._template(template)

    def _template(self, template: str | Path) -> Any:
        if isinstance(template, str) and _NAME.fullmatch(template):
            if template not in template_names():
                raise ReportError(
                    f"no template {template!r}: the package has {', '.join(template_names())}"
                    " (or give a file's path)"
                )
            return self.env.get_template(f"{template}.html.j2")
        path = Path(template)
        if not path.is_file():
            raise ReportError(f"template {str(path)!r} is not a file")
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ReportError(f"template {str(path)!r} is larger than {MAX_TEMPLATE_BYTES} bytes")
        try:
            return self.env.from_string(path.read_text())
        except (TemplateSyntaxError, UnicodeDecodeError) as e:
            raise ReportError(f"template {str(path)!r}: {e}") from None


def to_pdf(html: str) -> bytes:
    """A PDF of ``html`` (WeasyPrint), loading ``data:`` URIs only."""
    from weasyprint import HTML
    from weasyprint.urls import URLFetcher

    fetcher = URLFetcher(allowed_protocols=["data"], allow_redirects=False)
    pdf = HTML(string=html, url_fetcher=fetcher).write_pdf()
    if pdf is None:  # pragma: no cover - only without a target it returns bytes
        raise ReportError("WeasyPrint wrote no PDF")
    return bytes(pdf)
