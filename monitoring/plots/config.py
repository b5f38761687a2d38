"""What a plot looks like: :class:`PlotConfig`, validated (every size bounded)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PlotType = Literal["line", "bar", "scatter", "heatmap"]
PlotFormat = Literal["png", "svg", "pdf", "html"]
TYPES: tuple[str, ...] = ("line", "bar", "scatter", "heatmap")
FORMATS: tuple[str, ...] = ("png", "svg", "pdf", "html")
MEDIA_TYPES = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "html": "text/html; charset=utf-8",
}


class PlotConfig(BaseModel):
    """One plot's type, output format, texts and bounds.

    ``max_points`` bounds the points drawn per series (default: the width in pixels);
    ``max_series`` the series drawn (the rest are named in the plot's notes).

    >>> PlotConfig(type="bar", format="svg").points()
    900
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: PlotType = "line"
    format: PlotFormat = "png"
    title: str = Field("", max_length=200)
    unit: str = Field("", max_length=32, description="the values' unit: bytes, seconds, %...")
    y_label: str = Field("", max_length=100)
    x_label: str = Field("", max_length=100)
    width_px: int = Field(900, ge=200, le=4000)
    height_px: int = Field(450, ge=150, le=3000)
    dpi: int = Field(100, ge=50, le=300)
    max_series: int = Field(20, ge=1, le=200)
    max_points: int | None = Field(None, ge=10, le=20_000)
    legend: bool = True

    def points(self) -> int:
        """Points drawn per series at most."""
        return self.max_points or self.width_px
