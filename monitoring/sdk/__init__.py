"""Client SDKs: what producers of metrics, model events and logs use
(``monitoring.metrics.collector`` stays the public import for metrics)."""
