"""The platform's ``health/`` module: ``health_check``, ``status``, ``diagnostics``,
``recovery``, re-exporting ``monitoring.ops`` (docs/operations.md)."""
