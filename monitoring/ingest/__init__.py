"""Ingest: telemetry people already run (system, Prometheus, OTLP) as MetricBatch records."""
