"""Online anomaly detection per series (domain code: no Kafka, Faust or ClickHouse).

``SeriesScorer`` (scorer.py) is what the agent and ``monitoring anomaly replay`` run;
detectors (detectors.py) are selected by name through the registry (registry.py).
"""

from monitoring.anomaly.registry import DEFAULT_DETECTOR, detector_names, get_spec
from monitoring.anomaly.scorer import Scored, SeriesScorer

__all__ = ["DEFAULT_DETECTOR", "Scored", "SeriesScorer", "detector_names", "get_spec"]
