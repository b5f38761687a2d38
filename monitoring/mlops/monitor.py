"""``ModelMonitor``: one source partition's join of predictions and labels, as samples.

Predictions and labels are keyed by prediction id, so a prediction and its label are in
the same partition of their two topics; either may arrive first. Each waits in a
pending table until its partner arrives, at most ``join_horizon_ms`` of event time (the
partition's clock is the greatest event time seen on either topic) and at most
``max_pending`` entries (the oldest goes first); what expires is counted, and an expired
prediction is counted in ``model_predictions_unlabelled_total``.

Samples (``monitoring.metrics.samples.Sample``) go to the samples topic, where the
aggregation agent windows them like any series; labels are ``model``, ``version`` and
the prediction's extra labels. Counts are cumulative ``COUNTER`` series of each
partition (label ``partition``: sum over it) published once per ``counter_window_ms``
(``mlops.counters``: a replay after a crash rewrites the same values at the same
timestamps, so they stay exact); the rest are per-event gauges, published again for the
events a crashed worker replays:

======================================  ====================================================
``model_predictions_total``             predictions (counter)
``model_correct_sum`` / ``_count``      correct / all joined classifications (counters:
                                        accuracy = ``increase(sum) / increase(count)``)
``model_abs_error_sum`` / ``_count``    sum of abs(true - predicted) / joined regressions
                                        (counters: MAE = ``increase(sum) / increase(count)``)
``model_predictions_unlabelled_total``  predictions whose label never came (counter)
``model_latency_ms``                    latency per prediction (window p50/p90/p99)
``model_accuracy_rolling``              River ``Rolling(Accuracy)`` over the last
                                        ``rolling_window`` outcomes *of this partition*
                                        (label ``partition``), at the label's event time
``model_mae_rolling``                   the same with ``Rolling(MAE)``
``model_feature_drift``                 per feature (label ``feature``): 1.0 when the
                                        feature's River drift detector fires, else 0.0 once
                                        per ``drift_interval_ms`` of event time: window max
                                        = drift (a repeat changes no max)
======================================  ====================================================

The counters' sums over partitions are exact; the rolling River metrics are
estimates per partition because each partition's
monitor sees only its share of the ids (a uniform random subset, since ids hash across
partitions). The same holds for drift: every partition's detector sees a uniform
sample of the feature's values, which has the same distribution, so a shift shows up in
each partition (after about ``partitions`` times as many predictions as one detector
would need). A detection is a 1.0 at the triggering prediction's time, so it is in that
window's max and never lost between heartbeats.

State (pending entries, River objects, counts, the applied offset of each topic) is
checkpointed as keyed records; see ``checkpoint`` and ``restore``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from river import metrics, utils

from monitoring.metrics.budget import SeriesBudget
from monitoring.metrics.samples import Sample, series_key
from monitoring.mlops.counters import ModelCounters
from monitoring.mlops.drift import DEFAULT_DRIFT_DETECTOR, make_detector
from monitoring.mlops.events import Label, Prediction
from monitoring.mlops.state import pack_json, pack_pickle, unpack_json, unpack_pickle

PREDICTIONS_SOURCE = "predictions"
LABELS_SOURCE = "labels"
META_KEY = b"\x00meta"
_PRED, _LABEL, _SERIES = b"p\x00", b"l\x00", b"m\x00"

Records = list[tuple[bytes, bytes | None]]
_KEY_CACHE_MAX = 100_000


@dataclass(frozen=True)
class MonitorConfig:
    """How a partition's monitor joins and what it computes."""

    join_horizon_ms: int = 3_600_000
    max_pending: int = 100_000
    rolling_window: int = 1000
    drift_detector: str = DEFAULT_DRIFT_DETECTOR
    drift_interval_ms: int = 5_000
    partition: int = 0  # the value of the rolling series' ``partition`` label
    counter_window_ms: int = 10_000  # counters are published once per such window
    max_series: int = 0  # label sets with River state (0: no bound); see ``admits``

    def __post_init__(self) -> None:
        make_detector(self.drift_detector)  # raises on an unknown name
        if self.join_horizon_ms <= 0 or self.max_pending <= 0 or self.rolling_window <= 0:
            raise ValueError("join_horizon_ms, max_pending and rolling_window must be positive")
        if self.drift_interval_ms <= 0 or self.counter_window_ms <= 0:
            raise ValueError("drift_interval_ms and counter_window_ms must be positive")


@dataclass
class _Pending:
    """A prediction waiting for its label (or the reverse): what the join needs."""

    timestamp_ms: int
    labels: dict[str, str]  # series labels of the prediction; {} for a label
    cls: str | None
    value: float | None
    offset: int = -1  # of its message in its topic (-1: restored from an older state)

    def pack(self) -> bytes:
        return pack_json([self.timestamp_ms, self.labels, self.cls, self.value, self.offset])

    @classmethod
    def unpack(cls, data: bytes) -> _Pending:
        ts, labels, c, v, *offset = unpack_json(data)
        return cls(ts, labels, c, v, *offset)


@dataclass
class _SeriesState:
    """River state of one model version (one label set): rolling metrics, detectors."""

    accuracy: Any = None
    mae: Any = None
    detectors: dict[str, Any] = field(default_factory=dict)
    drift_bucket: dict[str, int] = field(default_factory=dict)  # last heartbeat bucket


class ModelMonitor:
    """Joins one partition's predictions and labels into samples; checkpointable."""

    def __init__(
        self, config: MonitorConfig | None = None, budget: SeriesBudget | None = None
    ) -> None:
        self.config = config or MonitorConfig()
        self.budget = budget  # the worker's bound, shared with its other partitions
        self.offsets = {PREDICTIONS_SOURCE: -1, LABELS_SOURCE: -1}
        self.clock_ms = 0  # greatest event time seen on either topic
        self.counts: Counter[str] = Counter()
        self.predictions: dict[str, _Pending] = {}
        self.labels: dict[str, _Pending] = {}
        self.series: dict[str, _SeriesState] = {}
        self.counters = ModelCounters(self.config.counter_window_ms, self.config.partition)
        self._heap: list[tuple[int, str, str]] = []  # (timestamp, kind p/l, id), lazy
        self._dirty_pending: set[bytes] = set()
        self._dirty_series: set[str] = set()
        self._changed = False
        self._keys: dict[tuple[str, str, tuple[str, str] | None], tuple[str, dict[str, str]]] = {}

    @property
    def pending(self) -> int:
        """Predictions and labels waiting for their partner."""
        return len(self.predictions) + len(self.labels)

    @property
    def has_changes(self) -> bool:
        return self._changed

    @property
    def series_count(self) -> int:
        """Label sets with River state (what a worker's budget counts)."""
        return len(self.series)

    def admits(self, p: Prediction) -> bool:
        """Whether ``p``'s label set has state or may get it: at most
        ``config.max_series`` of this partition and the ``budget``'s room (a refusal by
        it counted there). A label set keeps its state for good (its rolling metrics
        and drift detectors), so places come back only with a higher limit; the agent
        dead-letters a prediction refused here (``cardinality``) before it makes any
        state or count."""
        if series_key("", p.series_labels) in self.series:
            return True
        if self.config.max_series and len(self.series) >= self.config.max_series:
            return False
        if self.budget is not None and self.budget.room() <= 0:
            self.budget.refused += 1
            return False
        return True

    @property
    def has_unpublished_counts(self) -> bool:
        """Whether counts wait for a window to close (the agent ``close``s quiet ones)."""
        return self.counters.has_pending

    def waiting_for(self, topics: Iterable[int]) -> bool:
        """Whether ``close(topics)`` could publish counts (0 predictions, 1 labels)."""
        return self.counters.waiting(topics)

    def close(self, topics: Iterable[int] = (0, 1)) -> list[Sample]:
        """Publish the counts waiting for the window of these quiet topics (0
        predictions, 1 labels) to close; both: everything."""
        self._changed = True
        nxt = (self.offsets[PREDICTIONS_SOURCE] + 1, self.offsets[LABELS_SOURCE] + 1)
        return self.counters.close(nxt, topics)

    # -- events ------------------------------------------------------------------
    def apply_prediction(self, offset: int, p: Prediction) -> list[Sample] | None:
        """Samples for prediction ``p`` at ``offset``; None if already applied (replay)."""
        if not self._advance(PREDICTIONS_SOURCE, offset):
            return None
        labels = p.series_labels
        key = series_key("", labels)
        st = self._series(key)
        ts = p.timestamp_ms
        out = self.counters.prediction(offset, ts, key, labels)
        if p.latency_ms is not None:
            out.append(self._sample("model_latency_ms", key, labels, ts, p.latency_ms, "ms"))
        out.extend(self._drift(st, key, labels, ts, p.features))
        pid = p.prediction_id
        label = self.labels.pop(pid, None)
        if label is not None:
            self._dirty_pending.add(_LABEL + pid.encode())
            mine = _Pending(ts, labels, p.predicted_class, p.predicted_value, offset)
            out.extend(self._outcome(key, mine, label))
        elif pid in self.predictions:
            self.counts["duplicate_predictions"] += 1
        else:
            self.predictions[pid] = _Pending(
                ts, labels, p.predicted_class, p.predicted_value, offset
            )
            self._dirty_pending.add(_PRED + pid.encode())
            heapq.heappush(self._heap, (ts, "p", pid))
        self.counts["predictions"] += 1
        self._expire(ts)
        return out

    def apply_label(self, offset: int, label: Label) -> list[Sample] | None:
        """Samples for ``label`` at ``offset`` (none until its prediction is here)."""
        if not self._advance(LABELS_SOURCE, offset):
            return None
        out = self.counters.label(offset, label.timestamp_ms)
        pid = label.prediction_id
        mine = _Pending(label.timestamp_ms, {}, label.true_class, label.true_value, offset)
        pred = self.predictions.pop(pid, None)
        if pred is not None:
            self._dirty_pending.add(_PRED + pid.encode())
            out.extend(self._outcome(series_key("", pred.labels), pred, mine))
        elif pid in self.labels:
            self.counts["duplicate_labels"] += 1
        else:
            self.labels[pid] = mine
            self._dirty_pending.add(_LABEL + pid.encode())
            heapq.heappush(self._heap, (label.timestamp_ms, "l", pid))
        self.counts["labels"] += 1
        self._expire(label.timestamp_ms)
        return out

    def _advance(self, source: str, offset: int) -> bool:
        if offset <= self.offsets[source]:
            return False
        self.offsets[source] = offset
        self._changed = True
        return True

    def _series(self, key: str) -> _SeriesState:
        st = self.series.get(key)
        if st is None:
            st = self.series[key] = _SeriesState()
        return st

    def _outcome(self, key: str, pred: _Pending, truth: _Pending) -> list[Sample]:
        """One joined prediction: counted (``counters``), and the rolling metrics'
        samples at the label's event time."""
        st = self._series(key)
        self._dirty_series.add(key)
        ts, out = truth.timestamp_ms, []
        labels, cls, value = pred.labels, pred.cls, pred.value
        part = ("partition", str(self.config.partition))
        correct = err = None
        if cls is not None and truth.cls is not None:
            correct = cls == truth.cls
            if st.accuracy is None:
                st.accuracy = utils.Rolling(
                    metrics.Accuracy, window_size=self.config.rolling_window
                )
            st.accuracy.update(truth.cls, cls)
            acc = float(st.accuracy.get())
            out.append(self._sample("model_accuracy_rolling", key, labels, ts, acc, extra=part))
        if value is not None and truth.value is not None:
            err = abs(truth.value - value)
            if st.mae is None:
                st.mae = utils.Rolling(metrics.MAE, window_size=self.config.rolling_window)
            st.mae.update(truth.value, value)
            mae = float(st.mae.get())
            out.append(self._sample("model_mae_rolling", key, labels, ts, mae, extra=part))
        if correct is None and err is None:
            self.counts["incomparable"] += 1
        else:
            self.counts["joined"] += 1
            self.counters.outcome(pred.offset, truth.offset, key, labels, correct, err)
        return out

    def _drift(
        self,
        st: _SeriesState,
        key: str,
        labels: dict[str, str],
        ts: int,
        features: Mapping[str, float],
    ) -> list[Sample]:
        if not features:
            return []
        out = []
        bucket = ts // self.config.drift_interval_ms
        self._dirty_series.add(key)
        for name, x in features.items():
            det = st.detectors.get(name)
            if det is None:
                det = st.detectors[name] = make_detector(self.config.drift_detector)
            det.update(x)
            if det.drift_detected:
                self.counts["drifts"] += 1
            elif bucket <= st.drift_bucket.get(name, -1):
                continue
            st.drift_bucket[name] = max(bucket, st.drift_bucket.get(name, -1))
            value = 1.0 if det.drift_detected else 0.0
            out.append(
                self._sample("model_feature_drift", key, labels, ts, value, extra=("feature", name))
            )
        return out

    def _expire(self, ts: int) -> None:
        """Drop pending entries past the horizon or beyond ``max_pending`` (oldest first)."""
        self.clock_ms = max(self.clock_ms, ts)
        cutoff = self.clock_ms - self.config.join_horizon_ms
        heap = self._heap
        while heap and (heap[0][0] < cutoff or self.pending > self.config.max_pending):
            t, kind, pid = heapq.heappop(heap)
            table = self.predictions if kind == "p" else self.labels
            entry = table.get(pid)
            if entry is None or entry.timestamp_ms != t:
                continue  # joined (or replaced) since: a stale heap entry
            del table[pid]
            self.counts["evicted" if t >= cutoff else "expired"] += 1
            if kind == "p":
                self._dirty_pending.add(_PRED + pid.encode())
                self.counts["unlabelled_predictions"] += 1
                key = series_key("", entry.labels)
                self.counters.unlabelled(entry.offset, key, entry.labels)
            else:
                self._dirty_pending.add(_LABEL + pid.encode())
                self.counts["unmatched_labels"] += 1
        if len(heap) > 2 * self.pending + 1024:
            self._rebuild_heap()

    def _rebuild_heap(self) -> None:
        self._heap = [(e.timestamp_ms, "p", k) for k, e in self.predictions.items()]
        self._heap += [(e.timestamp_ms, "l", k) for k, e in self.labels.items()]
        heapq.heapify(self._heap)

    def _sample(
        self,
        name: str,
        key: str,
        labels: dict[str, str],
        ts: int,
        value: float,
        unit: str = "",
        extra: tuple[str, str] | None = None,
    ) -> Sample:
        """A sample of ``name`` over ``labels`` (series key ``key`` without the name) plus
        an ``extra`` label; series keys are cached, they cost more than the rest."""
        ck = (name, key, extra)
        hit = self._keys.get(ck)
        if hit is None:
            lab = labels if extra is None else {**labels, extra[0]: extra[1]}
            if len(self._keys) >= _KEY_CACHE_MAX:
                self._keys.clear()
            hit = self._keys[ck] = (series_key(name, lab), lab)
        return Sample(hit[0], name, hit[1], ts, value, "GAUGE", unit)

    # -- state ---------------------------------------------------------------------
    def checkpoint(self) -> Records:
        """Records of what changed since the last checkpoint, the meta record last.

        Keys: ``p\\0<id>`` / ``l\\0<id>`` a pending prediction / label (None once joined
        or expired), ``m\\0<labels>`` a series' River state, ``\\0meta`` offsets, clock
        and counts.
        """
        records: Records = []
        for k in sorted(self._dirty_pending):
            table = self.predictions if k.startswith(_PRED) else self.labels
            entry = table.get(k[2:].decode())
            records.append((k, entry.pack() if entry is not None else None))
        for key in sorted(self._dirty_series):
            st = self.series.get(key)
            records.append((_SERIES + key.encode(), pack_pickle(st) if st else None))
        meta = {
            "offsets": self.offsets,
            "clock_ms": self.clock_ms,
            "counts": dict(self.counts),
            "counters": self.counters.state(),
        }
        records.append((META_KEY, pack_json(meta)))
        self._dirty_pending.clear()
        self._dirty_series.clear()
        self._changed = False
        return records

    def restore(self, table: Mapping[bytes, bytes]) -> None:
        """Load the latest records of the changelog (tombstones already dropped)."""
        for k, v in table.items():
            if k == META_KEY:
                meta = unpack_json(v)
                self.offsets = {s: int(o) for s, o in meta["offsets"].items()}
                self.clock_ms = int(meta["clock_ms"])
                self.counts = Counter(meta["counts"])
                if "counters" in meta:  # absent in a state written before the counters
                    self.counters = ModelCounters.from_state(meta["counters"])
            elif k.startswith(_PRED):
                self.predictions[k[2:].decode()] = _Pending.unpack(v)
            elif k.startswith(_LABEL):
                self.labels[k[2:].decode()] = _Pending.unpack(v)
            elif k.startswith(_SERIES):
                self.series[k[2:].decode()] = unpack_pickle(v)
            else:
                raise ValueError(f"unknown model monitor state key {k[:40]!r}")
        self._rebuild_heap()


def apply_records(table: dict[bytes, bytes], records: Iterable[tuple[bytes, bytes | None]]) -> None:
    """What compaction leaves: the latest value per key, a None deleting it."""
    for k, v in records:
        if v is None:
            table.pop(k, None)
        else:
            table[k] = v
