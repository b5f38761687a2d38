"""``PlotGenerator().generate(data=..., plot_config=...)`` limited to ``plots.types``.

``data``: the store client's answers (``Series`` lists, a SQL ``Table``), a mapping
``name -> (x, y)``, or what ``MetricsAggregator.aggregate`` returned (one line per
series: each window's ``mean`` at its start, or the statistic named by
``plot_config["statistic"]``). ``plot_config``: ``PlotConfig``'s fields (``type`` one
of ``plots.types``, ``format`` png/svg/pdf/html, ``title``, ``unit``, sizes, bounds).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from monitoring.config import Settings
from monitoring.plots.config import PlotConfig
from monitoring.plots.generator import Plot
from monitoring.plots.generator import PlotGenerator as _Generator

__all__ = ["Plot", "PlotConfig", "PlotGenerator"]


def _windows_as_series(data: Any, statistic: str) -> Any:
    """Aggregation results as ``{series: (times, values)}``; anything else unchanged."""
    if not isinstance(data, list | tuple) or not data:
        return data
    if not all(hasattr(d, "aggregate") for d in data):
        return data
    lines: dict[str, tuple[list[Any], list[float]]] = {}
    for d in sorted(data, key=lambda d: d.window_start_ms):
        a = d.aggregate
        value = getattr(a, statistic, None)
        if value is None:
            raise ValueError(f"statistic {statistic!r} is not a field of the windows")
        x, y = lines.setdefault(a.series, ([], []))
        x.append(np.datetime64(a.window_start_ms, "ms"))
        y.append(float(value))
    return {k: (np.array(x), np.array(y)) for k, (x, y) in lines.items()}


class PlotGenerator(_Generator):
    """``monitoring.plots.PlotGenerator`` allowing the settings' ``plots.types``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings.load()

    def generate(
        self, data: Any, plot_config: PlotConfig | Mapping[str, Any] | None = None
    ) -> Plot:
        """Draw ``data`` (see the module); ValueError for a type the settings do not allow."""
        raw = dict(plot_config.model_dump() if isinstance(plot_config, PlotConfig)
                   else (plot_config or {}))  # fmt: skip
        statistic = str(raw.pop("statistic", "mean"))
        config = PlotConfig.model_validate(raw)
        if config.type not in self.settings.plots.types:
            raise ValueError(
                f"plot type {config.type!r} is not enabled (plots.types: "
                f"{', '.join(self.settings.plots.types)})"
            )
        return super().generate(_windows_as_series(data, statistic), config)
