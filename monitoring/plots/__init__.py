"""Plots of the store's data: static images (matplotlib) and interactive HTML (plotly).

``PlotGenerator().generate(data=..., plot_config=...)`` (the platform's façade) and
``monitoring plot`` (monitoring/cli/plot.py). See docs/plots-and-reports.md.
"""

from monitoring.plots.config import PlotConfig
from monitoring.plots.generator import Plot, PlotGenerator

__all__ = ["Plot", "PlotConfig", "PlotGenerator"]
