"""Anomaly agent: aggregates topic -> per-series detectors -> anomaly_score series and events.

The pure parts around ``monitoring.anomaly.partition.PartitionScorers``, run by
``monitoring.runtime``: for every closed
window of the configured size (``anomaly.window``, 10 s by default) it scores the
configured field (``anomaly.field``, the mean by default) with the series' detector
and publishes

- the score as the series ``anomaly_score{metric="<name>", <the series' labels>}``: an
  ``Aggregate`` record for the same window (count 1, every statistic the score,
  ``closed_by="anomaly"``) on the aggregates topic, so the store keeps it and alert
  rules see it like any other series;
- an ``Anomaly`` event (``schemas/anomaly.v3.avsc``) on the anomalies topic when the
  detector is past its warm-up and the score reaches ``anomaly.threshold`` (unset: the
  detector's alert level, the cross-validated decision threshold), with the
  value the detector expected, the band it judged against and the components that
  fired (``value 812, expected 120-310``).

Detector state is checkpointed to the compacted ``anomaly.state`` topic with each
series' applied offset: a restart restores what every
detector learned and skips the messages it had already applied, so its scores equal
those of a run without restart. ``anomaly_score`` series are never scored themselves.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoring.anomaly import DEFAULT_DETECTOR, detector_names
from monitoring.anomaly.partition import PartitionScorers
from monitoring.anomaly.registry import get_spec
from monitoring.anomaly.scorer import Scored, SeriesScorer
from monitoring.config import AnomalySettings, Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.budget import SeriesBudget
from monitoring.metrics.samples import series_key
from monitoring.runtime import topics
from monitoring.runtime.agent import Emit, Record, Records, StreamAgent
from monitoring.wire.aggregate_encoding import AggregateDecoder, AggregateEncoder
from monitoring.wire.codec import AvroCodec, DecodeError

log = get_logger("anomaly")
STATE_BYTES_EVERY_S = 30.0  # the memory gauge walks detectors' objects: not every checkpoint
ANOMALY = "monitoring.Anomaly"
SCORE_METRIC = "anomaly_score"


class DetectorChoice:
    """Which detector a metric gets: the first ``detectors`` route whose glob matches.

    >>> from monitoring.config import AnomalySettings
    >>> s = AnomalySettings(detectors=[{"match": "gpu_*", "detector": "zscore"}])
    >>> DetectorChoice(s, validate=False)("gpu_util"), DetectorChoice(s, validate=False)("cpu")
    ('zscore', 'default')
    """

    def __init__(self, settings: AnomalySettings, validate: bool = True) -> None:
        self.routes = [(r.match, r.detector) for r in settings.detectors]
        self.default = settings.detector
        self.excluded = [SCORE_METRIC, *settings.exclude]
        if validate:
            known = set(detector_names())
            for name in [self.default, *(d for _, d in self.routes)]:
                resolved = DEFAULT_DETECTOR if name == "default" else name
                if resolved not in known:
                    raise ValueError(
                        f"anomaly: unknown detector {name!r}; known: {', '.join(sorted(known))}"
                    )

    def __call__(self, metric: str) -> str:
        for pattern, detector in self.routes:
            if fnmatch.fnmatchcase(metric, pattern):
                return detector
        return self.default

    def resolved(self, metric: str) -> str:
        """The registered name of ``metric``'s detector (``default`` resolved)."""
        name = self(metric)
        return DEFAULT_DETECTOR if name == "default" else name

    def scored(self, metric: str) -> bool:
        """False for excluded metrics (and for ``anomaly_score`` itself)."""
        return not any(fnmatch.fnmatchcase(metric, p) for p in self.excluded)


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.anomalies = Counter("anomaly_events", "Anomaly events published", registry=registry)
        self.series = Gauge("anomaly_series", "Series with a detector", registry=registry)
        self.refused = Counter(
            "anomaly_series_refused",
            "Points of new series not scored: a series limit of anomaly reached",
            registry=registry,
        )
        self.undecodable_state = Counter(
            "anomaly_state_undecodable",
            "Checkpointed detectors that no longer decode (their series start afresh)",
            registry=registry,
        )
        self.state_bytes = Gauge(
            "anomaly_state_bytes", "Approximate memory of all detectors", registry=registry
        )


class AnomalyAgent(StreamAgent[PartitionScorers]):
    """Scores closed windows per aggregates partition (see the module docstring)."""

    name = "anomaly"

    def __init__(
        self, settings: Settings, registry: CollectorRegistry, codec: AvroCodec | None = None
    ) -> None:
        self.settings = a = settings.anomaly
        self.codec = codec or AvroCodec.from_directory()
        self.encoder = AggregateEncoder(self.codec)
        self.decoder = AggregateDecoder(self.codec)
        self.metrics = _Metrics(registry)
        self.choice = DetectorChoice(a)
        self.window_ms = ms(a.window)
        self.idle_ms = ms(a.idle_eviction)
        self.checkpoint_interval_s = a.checkpoint_interval.total_seconds()
        k = settings.kafka
        self.aggregates_topic = topics.topic_name(k, topics.AGGREGATES)
        self.sources = (self.aggregates_topic,)
        self.state_topic = topics.topic_name(k, topics.ANOMALY_STATE)
        self.anomalies_topic = topics.topic_name(k, topics.ANOMALIES)
        self._sized_at = -STATE_BYTES_EVERY_S
        # anomaly.max_series_per_worker: detectors of every partition this worker holds
        self.budget = SeriesBudget(a.max_series_per_worker)

    def scorer(self, metric: str) -> SeriesScorer:
        """A fresh scorer for a series of ``metric``."""
        detector = self.choice.resolved(metric)
        if self.settings.warmup:
            return SeriesScorer(detector, warmup=self.settings.warmup)
        return SeriesScorer(detector)

    def threshold(self, metric: str) -> float:
        """The score from which a point of ``metric`` is an anomaly event:
        ``anomaly.threshold``, or unset, its detector's alert level."""
        if self.settings.threshold is not None:
            return self.settings.threshold
        return get_spec(self.choice.resolved(metric)).alert_level

    def health(self, states: Mapping[int, PartitionScorers]) -> dict[str, Any]:
        """The number of series with a detector, and the worker's bound."""
        return {
            "series": sum(len(s) for s in states.values()),
            "series_limit_per_worker": self.budget.limit,
            "series_refused_by_worker_limit": self.budget.refused,  # points not scored
        }

    # -- the stream ---------------------------------------------------------------
    def handle(self, msg: Record, state: PartitionScorers, out: Emit) -> int:
        """Score one aggregate; 1 if it was scored."""
        try:
            agg = self.decoder.decode(msg.value)
        except DecodeError as e:
            reason = "unexpected-record" if e.reason == "wrong-record" else e.reason
            out.dead_letter(reason, str(e))
            return 0
        if agg.window_ms != self.window_ms or not self.choice.scored(agg.name):
            return 0
        if not state.admits(agg.series):
            self.metrics.refused.inc()
            return 0
        value = float(getattr(agg, self.settings.field))
        scored = state.process(msg.offset, agg.series, agg.name, agg.window_start_ms, value)
        if scored is None:
            out.skip_replayed()
            return 0
        self._publish(out, agg, scored)
        return 1

    def _publish(self, out: Emit, src: Aggregate, scored: Scored) -> None:
        labels = {**src.labels, "metric": src.name}
        key = series_key(SCORE_METRIC, labels)
        s = scored.score
        agg = Aggregate(
            key, SCORE_METRIC, labels, src.window_ms, src.window_start_ms, src.window_end_ms,
            1, s, s, s, s, s, s, s, s, closed_by="anomaly",
        )  # fmt: skip
        out.send(self.aggregates_topic, key.encode(), self.encoder.encode(agg))
        threshold = self.threshold(src.name)
        if not scored.warm or s < threshold:
            return
        self.metrics.anomalies.inc()
        event = {
            "series": src.series,
            "name": src.name,
            "labels": dict(src.labels),
            "timestamp_ms": src.window_start_ms,
            "value": scored.value,
            "score": s,
            "detector": self.choice.resolved(src.name),
            "window_ms": src.window_ms,
            "field": self.settings.field,
            "threshold": threshold,
            "signals": {k: float(v) for k, v in scored.signals.items()},
            "expected": scored.expected,
            "lower": scored.lower,
            "upper": scored.upper,
            "components": list(scored.components),
        }
        out.send(self.anomalies_topic, src.series.encode(), self.codec.encode(ANOMALY, event))

    def observe(self, states: Mapping[int, PartitionScorers]) -> None:
        """Series and (every ``STATE_BYTES_EVERY_S``: a deep walk) memory gauges."""
        self.metrics.series.set(sum(len(s) for s in states.values()))
        if time.monotonic() - self._sized_at >= STATE_BYTES_EVERY_S:
            self._sized_at = time.monotonic()
            self.metrics.state_bytes.set(sum(s.nbytes() for s in states.values()))

    # -- state ---------------------------------------------------------------------
    def restore(self, partition: int, table: dict[bytes, bytes]) -> PartitionScorers:
        """The detectors of ``partition``; those that no longer decode start afresh."""
        part = PartitionScorers(
            self.scorer, self.idle_ms, self.settings.max_series, budget=self.budget
        )
        part.restore({k.decode(errors="replace"): v for k, v in table.items()})
        self.budget.join(partition, part)  # restored detectors are kept, and count
        self.metrics.undecodable_state.inc(part.undecodable)
        log.info(
            "anomaly_restored", partition=partition, series=len(part), dropped=part.undecodable
        )
        for series, why in part.refused:  # the first few, with the reason
            log.warning("anomaly_state_refused", partition=partition, series=series, reason=why)
        return part

    def release(self, partition: int, state: PartitionScorers) -> None:
        """A revoked partition's detectors no longer count against the worker's bound."""
        self.budget.leave(partition, state)

    def snapshot(self, state: PartitionScorers) -> Records | None:
        """The detectors changed since the last checkpoint."""
        if not state.has_changes:
            return None
        return [(k.encode(), v) for k, v in state.checkpoint()]
