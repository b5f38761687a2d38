"""``PlotGenerator().generate(data=..., plot_config=...)``: the platform's plot façade."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitoring.plots import interactive, static
from monitoring.plots.config import MEDIA_TYPES, PlotConfig
from monitoring.plots.data import bound, traces


@dataclass(frozen=True)
class Plot:
    """A rendered plot: its bytes, format and what was left out of it."""

    content: bytes
    format: str
    series: int
    notes: list[str] = field(default_factory=list)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]

    def save(self, path: str | Path) -> Path:
        """Write the plot to ``path``."""
        out = Path(path)
        out.write_bytes(self.content)
        return out


class PlotGenerator:
    """Plots from the store client's answers (or a mapping of series).

    >>> plot = PlotGenerator().generate(
    ...     data={"a": ([1, 2, 3], [1.0, 4.0, 2.0])}, plot_config={"type": "bar", "format": "svg"}
    ... )
    >>> plot.format, plot.content[:5] in (b"<?xml", b"<svg ")
    ('svg', True)
    """

    def generate(
        self, data: Any, plot_config: PlotConfig | Mapping[str, Any] | None = None
    ) -> Plot:
        """Draw ``data`` as ``plot_config`` says (a PlotConfig or its fields as a dict)."""
        config = (
            plot_config
            if isinstance(plot_config, PlotConfig)
            else PlotConfig.model_validate(dict(plot_config or {}))
        )
        bounded = bound(traces(data), config.max_series, config.points())
        if config.format == "html":
            content = interactive.render(bounded, config)
        else:
            content = static.render(bounded, config)
        return Plot(content, config.format, len(bounded.traces), bounded.notes)
