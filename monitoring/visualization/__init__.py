"""The platform's ``visualization/`` module: dashboards (``dashboard``), plots
(``plots``), reports (``reports``) and export (``export``), each a thin layer over
``monitoring.ui``, ``monitoring.plots`` and ``monitoring.reports`` that takes its
defaults from the settings (``ui``, ``plots``, ``reporting``). docs/python-api.md."""
