"""Cumulative counters of one partition's model events, emitted so a replay rewrites them.

Why counters. The model metrics agent has no Kafka transactions: after a SIGKILL it
replays the events since its last checkpoint and publishes their samples again. A
sample per event (``1.0`` per prediction) is then counted twice by the aggregation
agent, whatever its bytes: the repeat is a new record on the samples topic and every
window counts every record (the ``samples`` table would collapse an exact repeat of
``(series, ts)``, but the aggregates would not, and two genuine outcomes in the same
millisecond would collapse there too). A cumulative counter (Prometheus' convention,
as the log agent's counts) is idempotent instead: a replayed emission repeats a value
already published, the windows' ``last``/``max`` are unchanged, and increases are
differences (``increase()``), so the totals are exact across any number of crashes.

Each partition counts its share of the prediction ids, so every counter has the label
``partition`` (as Prometheus' counters have ``instance``): totals are sums over it.

Determinism. A repeat is harmless only if it is the *same* value at the same
timestamp. The agent reads two topics (predictions, labels) whose interleaving is not
reproducible: Faust may fetch one topic further ahead in the replay than it did the
first time. So nothing emitted depends on that interleaving, only on each topic's own
order. Windows are tumbling, ``window_ms`` long, in each topic's own event time: the
offset of the first message of a topic with event time at or after a boundary ``B`` is
that topic's *crossing* of ``B``, the same in every run. The value published for ``B``
(stamped ``B - 1``, inside the window it ends) counts

* for ``model_predictions_total``: the predictions before the predictions topic's
  crossing of ``B``, published at that crossing;
* for the outcome counters (``model_correct_sum``/``_count``,
  ``model_abs_error_sum``/``_count``, ``model_predictions_unlabelled_total``): the
  outcomes both of whose messages (prediction and label) come before their topic's
  crossing of ``B``, published once both topics have crossed it (then all of them are
  known). Float sums add the outcomes in (prediction offset, label offset) order.

Boundaries published are those where either topic's open window closed (a jump over
idle windows publishes the first only). A topic quiet on the wall clock is closed by
``close``: it crosses the later open window's end at its next offset, so the events
waiting for it are published without waiting for more. Only such a close (a replay
might not close at the same point; the agent checkpoints right after one, so only a
crash within that checkpoint's few milliseconds can publish another value there) and
the join itself at the horizon's edge (expiry uses the partition's clock, the greatest
event time of both topics) depend on timing, besides topics more than
``MAX_CROSSINGS`` windows apart (see ``_prune``).

>>> c = ModelCounters(window_ms=10_000)
>>> c.prediction(0, 1_000, "churn", {"model": "churn"})
[]
>>> [(s.series, s.timestamp_ms, s.value) for s in c.prediction(1, 12_000, "churn",
...                                                            {"model": "churn"})]
[('model_predictions_total{model="churn",partition="0"}', 9999, 1.0)]
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

from monitoring.metrics.samples import Sample, series_key

PREDICTIONS = "model_predictions_total"
UNLABELLED = "model_predictions_unlabelled_total"
CORRECT_SUM, CORRECT_COUNT = "model_correct_sum", "model_correct_count"
ABS_ERROR_SUM, ABS_ERROR_COUNT = "model_abs_error_sum", "model_abs_error_count"
P, L = 0, 1  # the two source topics: predictions, labels
MAX_CROSSINGS = 1_000


class _Clock:
    """One topic's open window and its crossings not yet needed (``(end, offset)``:
    messages from ``offset`` on have event times at or after every boundary below
    ``end`` and above the previous entry's ``end``)."""

    __slots__ = ("crossings", "open_end")

    def __init__(self) -> None:
        self.open_end = 0  # 0: no message yet
        self.crossings: list[tuple[int, int]] = []

    def offset_of(self, boundary: int) -> int:
        """This topic's crossing of ``boundary`` (which it has crossed)."""
        i = bisect.bisect_right(self.crossings, (boundary, 1 << 62))
        return self.crossings[i][1]


class ModelCounters:
    """Cumulative per-series counters of one partition; see the module docstring."""

    def __init__(self, window_ms: int, partition: int = 0) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.window_ms = window_ms
        self.partition = str(partition)
        self.clocks = (_Clock(), _Clock())
        # series key without name -> labels, ``partition`` added
        self.labels: dict[str, dict[str, str]] = {}
        self.values: dict[tuple[str, str], float] = {}  # (name, key) -> cumulative value
        self.pending_p: dict[str, int] = {}  # predictions not yet published, per key
        # outcomes not yet published: (prediction offset, label offset, key, name, value)
        self.pending: list[tuple[int, int, str, str, float]] = []
        self.boundaries: list[int] = []  # sorted, outcome boundaries not yet published
        self._keys: dict[tuple[str, str], str] = {}

    @property
    def has_pending(self) -> bool:
        """Whether counts wait for a window to close (what ``close`` would publish)."""
        return self.waiting()

    # -- events -----------------------------------------------------------------
    def prediction(
        self, offset: int, timestamp_ms: int, key: str, labels: Mapping[str, str]
    ) -> list[Sample]:
        """Count the prediction at ``offset``; returns the samples it made due."""
        out = self._advance(P, offset, timestamp_ms)
        self._label(key, labels)
        self.pending_p[key] = self.pending_p.get(key, 0) + 1
        return out

    def label(self, offset: int, timestamp_ms: int) -> list[Sample]:
        """Advance the labels topic's clock with the label at ``offset``."""
        return self._advance(L, offset, timestamp_ms)

    def outcome(
        self,
        p_offset: int,
        l_offset: int,
        key: str,
        labels: Mapping[str, str],
        correct: bool | None,
        abs_error: float | None,
    ) -> None:
        """A joined prediction (at ``p_offset``) and label (at ``l_offset``)."""
        self._label(key, labels)
        if correct is not None:
            self.pending.append((p_offset, l_offset, key, CORRECT_SUM, 1.0 if correct else 0.0))
            self.pending.append((p_offset, l_offset, key, CORRECT_COUNT, 1.0))
        if abs_error is not None:
            self.pending.append((p_offset, l_offset, key, ABS_ERROR_SUM, abs_error))
            self.pending.append((p_offset, l_offset, key, ABS_ERROR_COUNT, 1.0))

    def unlabelled(self, p_offset: int, key: str, labels: Mapping[str, str]) -> None:
        """A prediction (at ``p_offset``) expired without its label."""
        self._label(key, labels)
        self.pending.append((p_offset, -1, key, UNLABELLED, 1.0))

    def waiting(self, topics: Iterable[int] = (P, L)) -> bool:
        """Whether closing ``topics`` could publish something."""
        return bool(self.pending or (P in topics and self.pending_p))

    def close(self, next_offsets: tuple[int, int], topics: Iterable[int] = (P, L)) -> list[Sample]:
        """``topics`` are quiet: they cross the later open window's end at
        ``next_offsets`` (the offsets they will read next) without waiting for a later
        message. Closing both publishes everything; closing one publishes what waits
        only for it (a topic that goes quiet would hold the outcomes up)."""
        end = max(c.open_end for c in self.clocks)
        if not end:
            return []
        out: list[Sample] = []
        for topic in sorted(set(topics)):
            clock = self.clocks[topic]
            if clock.open_end > end:
                continue
            start = clock.open_end
            clock.crossings.append((end + self.window_ms, next_offsets[topic]))
            clock.open_end = end + self.window_ms
            if start:
                out += self._crossed(topic, start)
        if end not in self.boundaries:
            bisect.insort(self.boundaries, end)
        return out + self._publish_outcomes()

    # -- internals ----------------------------------------------------------------
    def _label(self, key: str, labels: Mapping[str, str]) -> None:
        if key not in self.labels:
            self.labels[key] = {**labels, "partition": self.partition}

    def _advance(self, topic: int, offset: int, ts: int) -> list[Sample]:
        clock = self.clocks[topic]
        if ts < clock.open_end:
            return []
        start, w = clock.open_end, self.window_ms
        clock.open_end = ts - ts % w + w
        clock.crossings.append((clock.open_end, offset))
        out = self._crossed(topic, start) if start else []
        return out + self._publish_outcomes()

    def _crossed(self, topic: int, boundary: int) -> list[Sample]:
        """``topic`` closed its window ending at ``boundary``."""
        # While the other topic has no message, no outcome can be counted before its
        # first crossing (its offsets start there): such a boundary would publish nothing
        if self.clocks[1 - topic].open_end and boundary not in self.boundaries:
            bisect.insort(self.boundaries, boundary)
        if topic != P or not self.pending_p:
            return []
        for key, n in self.pending_p.items():
            k = (PREDICTIONS, key)
            self.values[k] = self.values.get(k, 0.0) + n
        out = [self._sample(PREDICTIONS, key, boundary - 1) for key in sorted(self.pending_p)]
        self.pending_p.clear()
        return out

    def _publish_outcomes(self) -> list[Sample]:
        """Every outcome boundary both topics have crossed, in order."""
        p, lab = self.clocks
        out: list[Sample] = []
        while self.boundaries and min(p.open_end, lab.open_end) > self.boundaries[0]:
            b = self.boundaries.pop(0)
            if not self.pending:
                continue
            po, lo = p.offset_of(b), lab.offset_of(b)
            due = sorted(e for e in self.pending if e[0] < po and e[1] < lo)
            if not due:
                continue
            self.pending = [e for e in self.pending if not (e[0] < po and e[1] < lo)]
            changed = set()
            for _, _, key, name, value in due:
                k = (name, key)
                self.values[k] = self.values.get(k, 0.0) + value
                changed.add(k)
            out += [self._sample(name, key, b - 1) for name, key in sorted(changed)]
        self._prune()
        return out

    def _prune(self) -> None:
        """Drop the crossings no boundary can need any more: every boundary still to
        publish, or registered later, is at or above the oldest kept boundary and the
        open windows' ends. Topics more than ``MAX_CROSSINGS`` windows apart keep the
        newest only (the oldest boundaries then count a little more than the first run
        may have, the one case where the values depend on the interleaving)."""
        lows = [c.open_end for c in self.clocks]
        # while a topic has no message, its first window (which the other topic's
        # crossings must cover) could be anywhere: keep them (up to MAX_CROSSINGS)
        need = min([*self.boundaries[:1], *lows]) if min(lows) else 0
        for clock in self.clocks:
            i = bisect.bisect_right(clock.crossings, (need, 1 << 62))
            i = max(i, len(clock.crossings) - MAX_CROSSINGS)
            if i > 0:
                del clock.crossings[:i]
        if len(self.boundaries) > MAX_CROSSINGS:
            del self.boundaries[: len(self.boundaries) - MAX_CROSSINGS]

    def _sample(self, name: str, key: str, ts: int) -> Sample:
        ck = (name, key)
        series = self._keys.get(ck)
        labels = self.labels[key]
        if series is None:
            if len(self._keys) >= 100_000:
                self._keys.clear()
            series = self._keys[ck] = series_key(name, labels)
        return Sample(series, name, labels, ts, self.values[ck], "COUNTER")

    # -- state -----------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """JSON-friendly state."""
        return {
            "window_ms": self.window_ms,
            "partition": self.partition,
            "clocks": [[c.open_end, [list(x) for x in c.crossings]] for c in self.clocks],
            "labels": self.labels,
            "values": [[n, k, v] for (n, k), v in sorted(self.values.items())],
            "pending_p": self.pending_p,
            "pending": [list(e) for e in self.pending],
            "boundaries": self.boundaries,
        }

    @classmethod
    def from_state(cls, st: Mapping[str, Any]) -> ModelCounters:
        c = cls(int(st["window_ms"]), int(st["partition"]))
        for clock, (open_end, crossings) in zip(c.clocks, st["clocks"], strict=True):
            clock.open_end = int(open_end)
            clock.crossings = [(int(e), int(o)) for e, o in crossings]
        c.labels = {k: dict(v) for k, v in st["labels"].items()}
        c.values = {(n, k): float(v) for n, k, v in st["values"]}
        c.pending_p = {k: int(n) for k, n in st["pending_p"].items()}
        c.pending = [(int(a), int(b), k, n, float(v)) for a, b, k, n, v in st["pending"]]
        c.boundaries = [int(b) for b in st["boundaries"]]
        return c
