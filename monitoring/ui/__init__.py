"""The dashboards web app (``monitoring ui``): dashboards as files, a bounded proxy to
the store's Prometheus API and ClickHouse interface, and a plain HTML + JS front end
drawn with the installed plotly package's plotly.js. ``DashboardCreator`` builds a
dashboard from metric names."""

from monitoring.ui.creator import DashboardCreator

__all__ = ["DashboardCreator"]
