"""Reports of a period from the store: Jinja2 templates to HTML and PDF (WeasyPrint).

``ReportGenerator().generate(data=..., template=...)`` (the platform's façade) and
``monitoring report run`` (monitoring/cli/report.py). See docs/plots-and-reports.md.
"""

from monitoring.reports.generator import Report, ReportData, ReportError, ReportGenerator

__all__ = ["Report", "ReportData", "ReportError", "ReportGenerator"]
