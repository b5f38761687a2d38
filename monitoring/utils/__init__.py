"""The platform's ``utils/`` module: ``config`` (settings, the platform's configuration
shape), ``validation``, ``monitoring_utils``, ``logging``. Imports nothing itself:
``monitoring.config`` imports ``platform_config`` from here."""
