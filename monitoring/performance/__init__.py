"""The platform's ``performance/`` module: ``tracking``, ``analysis``, ``optimization``,
``benchmarking``, re-exporting ``monitoring.perf`` (docs/performance.md)."""
