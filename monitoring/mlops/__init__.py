"""Model monitoring (MLOps), pure Python: prediction and label events joined per
partition into metric samples (accuracy, absolute error, latency, feature drift).

``monitor.ModelMonitor`` is the per-partition core; ``events`` validates the decoded
Avro records; ``drift`` names the River drift detectors. No Kafka, no ClickHouse.
"""

from monitoring.mlops.events import InvalidModelEvent, Label, Prediction
from monitoring.mlops.monitor import ModelMonitor, MonitorConfig

__all__ = ["InvalidModelEvent", "Label", "ModelMonitor", "MonitorConfig", "Prediction"]
