"""Event-time tumbling windows for every series of one source partition.

Semantics (the property tests hold this class to a brute-force oracle):

* Each sample falls into one window per configured size: ``[start, start + size)``
  with ``start = ts - ts % size``.
* The partition's watermark is ``max event time seen - allowed_lateness``; it
  advances after each message (a batch message is one step). A window closes when
  the watermark reaches its end; its aggregate is returned once.
* A sample whose window (for some size) has already closed is *late* for that size:
  it is returned in ``late`` (the agent routes it to the late topic), counted, and
  still added to the windows of the other sizes that are open.
* ``close_idle()`` closes every open window (wall-clock idleness is the caller's
  decision). Samples for a window it closed are late afterwards, for that window's
  size, rather than reopening it: per size, every window up to the one holding the
  greatest event time seen is closed (``idle_event_ms`` keeps that time). The
  watermark is raised only to the earliest of those windows' ends over the sizes
  (every window of every size ending by it is closed), not to the greatest: a 1 min
  window closed early must not make late the samples of the 10 s windows after the
  one closed, which were never opened (they are newer than every sample seen).

Counter fields (``first``, ``increase``, ``resets``; docs/aggregation.md):

* A series' *counter sequence* is its samples in arrival order, less those older than
  the newest event time already in it (out of order: Prometheus' TSDB refuses them).
  Each sample of it has a *step* from the one before: ``v - prev``, or ``v`` when
  ``v < prev`` (a reset: the counter restarted from 0); the series' first sample has
  step 0. The series' previous value and its time (the *carry*) are kept per slot,
  across windows and checkpoints.
* A window's ``increase`` is the sum of the steps of its samples, so it includes the
  step from the previous window's last value into its first one, and the increases of
  consecutive windows add up to the counter's increase over them. ``resets`` counts
  the resets among those steps, ``first`` is the first of those samples' values. A
  window with none of them (every sample out of order) has all three None. Late
  samples move the carry but their step is lost to the sizes they are late for.
* The carry is kept for ``counter_horizon_ms`` (5 minutes, Prometheus' lookback, or the
  largest window if longer, unless given) behind the watermark a message sees, past
  its windows, so counters scraped up to that far apart chain their windows. A
  previous sample older than that is forgotten (the next sample starts the sequence
  afresh, step 0) and the series may free its slot. Forgetting depends only on the
  watermark, not on when checkpoints tombstone, so a replay computes the same steps.

Exactly-once state across restarts (checkpoints into a compacted changelog):

* Every message carries its source offset. ``checkpoint()`` returns one record per
  changed series (its open windows and the offset of the last message applied to
  it, or a tombstone once it has no open window) and one partition record
  (``checkpoint_offset``, watermark), written last.
* ``restore()`` rebuilds from those records. Messages at or below
  ``checkpoint_offset`` are skipped whole; a series also skips messages at or below
  its own applied offset (a crash part-way through writing a checkpoint). The
  watermark comes from the partition record only, so replayed messages see the
  same watermark they saw the first time and the same samples are late.

Cardinality: at most ``max_series`` series, and ``max_series_per_metric`` of one
metric name, hold a slot at once (0: no bound). ``admit`` drops the samples of a new
series beyond either bound before they make any state, and names the series it
refused (the agent dead-letters them with reason ``cardinality``); a series frees its
place when a checkpoint tombstones it (no open window left). So a producer that puts a
request id in a label costs the partition at most the bound, however many ids it sends.
The refused samples are counted (``refused_count``, checkpointed, so cumulative across
restarts and the same after a replay) and ``refused_samples`` publishes each change of
the count as the COUNTER series ``monitoring_series_refused_total{partition}`` for the
agent to send to the samples topic, where rules can alert on it
(infra/rules/pipeline.rules.yml); that metric is admitted whatever the bounds (one
series per partition), or a full partition would refuse its own counter.

A ``budget`` (``metrics.budget.SeriesBudget``) bounds the series of every partition a
worker holds: a new series beyond its ``room()`` is refused like one beyond the
partition's bounds (the same dead letter, the same ``refused_count``) and counted in
``budget.refused``. Whether a series is refused then depends on the other partitions
the worker holds, so a replay on another assignment may decide otherwise; the count
stays what this partition dead-lettered.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import repeat
from typing import Any, NamedTuple

import numpy as np

from monitoring.metrics.budget import UNBOUNDED, SeriesBudget
from monitoring.metrics.samples import Sample, SampleBatch, series_key, without_stale
from monitoring.metrics.window_columns import NO_TS, WindowColumns

NO_WATERMARK = -(2**62)
CHECKPOINT_KEY = "\x00checkpoint"
REFUSED_TOTAL = "monitoring_series_refused_total"  # admitted whatever the bounds...
# ...in the one shape the aggregators publish it (one series per samples partition), so
# that the name alone cannot carry unbounded series past the limits
_OWN_REFUSED = re.compile(REFUSED_TOTAL + r'\{partition="\d{1,4}"\}')
VECTOR_MIN = 32  # samples in a message from which numpy's per-call cost pays off
COUNTER_HORIZON_MS = 300_000  # Prometheus' lookback: a counter's carry outlives its windows


@dataclass(slots=True)
class Aggregate:
    """A closed window of one series (the Avro ``monitoring.Aggregate`` record).

    Not frozen: a frozen dataclass sets its 16 fields through ``object.__setattr__``
    (3.5 µs against 1 µs), and every reader of the aggregates topic builds one per
    window. Treat it as immutable.
    """

    series: str
    name: str
    labels: Mapping[str, str]
    window_ms: int
    window_start_ms: int
    window_end_ms: int
    count: int
    sum: float
    min: float
    max: float
    mean: float
    last: float
    p50: float
    p90: float
    p99: float
    closed_by: str = "watermark"
    first: float | None = None  # the counter fields; None: not computed (Aggregate v1)
    increase: float | None = None
    resets: int | None = None

    def to_record(self) -> dict[str, Any]:
        """The Avro record dict."""
        d = {f: getattr(self, f) for f in _AGGREGATE_FIELDS}
        d["labels"] = dict(self.labels)
        return d


_AGGREGATE_FIELDS = tuple(f.name for f in fields(Aggregate))


class Late(NamedTuple):
    """A sample that arrived after its window closed, for the sizes listed."""

    sample: Sample
    window_sizes_ms: tuple[int, ...]
    watermark_ms: int


class Result(NamedTuple):
    """What one step produced: closed windows and late samples."""

    closed: list[Aggregate]
    late: list[Late]


class Checkpoint(NamedTuple):
    """State records to write, in order: series records (None = tombstone), then meta."""

    offset: int
    series: list[tuple[str, dict[str, Any] | None]]
    meta: dict[str, Any]


class PartitionAggregator:
    """Window state of one source partition. Pure: no I/O, no clock.

    Each series gets a slot, an index into the columns of every open window
    (``WindowColumns``, one per window size and start). A message's samples update
    each window they fall in with a few numpy calls, however many series they name;
    messages of fewer than ``vector_min`` samples take a scalar path to the same
    results (numpy's per-call cost dominates there).
    """

    def __init__(
        self,
        windows_ms: Sequence[int],
        allowed_lateness_ms: int,
        relative_accuracy: float = 0.01,
        vector_min: int = VECTOR_MIN,
        max_series: int = 0,
        max_series_per_metric: int = 0,
        counter_horizon_ms: int | None = None,
        budget: SeriesBudget | None = None,
    ) -> None:
        if not windows_ms or any(w <= 0 for w in windows_ms):
            raise ValueError("window sizes must be positive")
        self.windows_ms = tuple(sorted(windows_ms))
        self.counter_horizon_ms = (
            max(COUNTER_HORIZON_MS, self.windows_ms[-1])
            if counter_horizon_ms is None
            else counter_horizon_ms
        )
        self._size_index = {w: i for i, w in enumerate(self.windows_ms)}
        self.allowed_lateness_ms = allowed_lateness_ms
        self.relative_accuracy = relative_accuracy
        self.vector_min = vector_min
        self.max_event_ms = NO_WATERMARK
        self.watermark_ms = NO_WATERMARK
        self.idle_event_ms = NO_WATERMARK  # the greatest event time at the last idle close
        self.checkpoint_offset = -1
        self.last_offset = -1
        self.late_count = 0
        self.skipped_count = 0
        self.max_series = max_series
        self.max_series_per_metric = max_series_per_metric
        self.budget = budget  # the worker's bound, shared with its other partitions
        self._per_metric: dict[str, int] = {}  # series holding a slot, by metric name
        self.refused_count = 0  # samples dropped by ``admit`` (checkpointed: cumulative)
        self.refused_published = 0  # the count ``refused_samples`` published last
        self._refused_published_ms: int | None = None  # and when
        # series slots: key -> slot, and per slot its key, name, labels
        self._slot_of: dict[str, int] = {}
        self._keys: list[str] = []
        self._names: list[str] = []
        self._labels: list[Mapping[str, str]] = []
        self._free: list[int] = []
        self._cap = 0
        self._used = np.zeros(0, bool)
        self._applied = np.zeros(0, np.int64)  # offset of the last message applied
        self._dirty = np.zeros(0, bool)  # changed since the last checkpoint
        # the carry: value and event time of the newest sample of each counter sequence
        self._carry = np.zeros(0)
        self._carry_ts = np.zeros(0, np.int64)
        self._mark = np.zeros(0, np.int64)  # scratch: a message's last index per slot
        # applied offsets read by restore(), for messages a checkpoint half-covered
        self._restored = np.zeros(0, np.int64)
        self._restored_max = -1
        self._windows: list[dict[int, WindowColumns]] = [{} for _ in self.windows_ms]
        self._next_end = _NEVER  # the earliest end of an open window

    # -- processing ---------------------------------------------------------------
    def admit(
        self, samples: Sequence[Sample] | SampleBatch
    ) -> tuple[Sequence[Sample] | SampleBatch, list[str]]:
        """The samples of series that hold a slot or may get one, and the keys of the new
        series refused by ``max_series`` / ``max_series_per_metric`` (in message order).

        >>> agg = PartitionAggregator([10_000], 0, max_series=1)
        >>> kept, refused = agg.admit([Sample("a", "a", {}, 1, 1.0), Sample("b", "b", {}, 1, 1.0)])
        >>> [s.series for s in kept], refused
        (['a'], ['b'])

        Staleness markers are left out here and in ``process``: they are not values, and
        a series they alone name gets no place.
        """
        samples = without_stale(samples)
        if not self.max_series and not self.max_series_per_metric and self.budget is None:
            return samples, []
        if isinstance(samples, SampleBatch):
            infos = [(d.key, d.name) if d is not None else None for d in samples.series]
        else:
            infos = [(s.series, s.name) for s in samples]
        refused = self._refuse([i for i in infos if i is not None])
        if not refused:
            return samples, []
        if isinstance(samples, SampleBatch):
            keep = np.array([i is not None and i[0] not in refused for i in infos], bool)
            mask = keep[samples.series_index]
            self.refused_count += int(len(mask) - np.count_nonzero(mask))
            series = [d if k else None for d, k in zip(samples.series, keep, strict=True)]
            batch = SampleBatch(
                series,
                samples.series_index[mask],
                samples.timestamps_ms[mask],
                samples.values[mask],
            )
            return batch, list(refused)
        kept = [s for s in samples if s.series not in refused]
        self.refused_count += len(samples) - len(kept)
        return kept, list(refused)

    def _refuse(self, infos: Iterable[tuple[str, str]]) -> dict[str, None]:
        """The new series (in order, once each) that would pass a bound."""
        total = len(self._slot_of)
        room = UNBOUNDED if self.budget is None else self.budget.room()
        new = 0  # series given a place by this call
        per_metric = self._per_metric
        added: dict[str, int] = {}
        seen: set[str] = set()
        refused: dict[str, None] = {}
        for key, name in infos:
            if (
                key in self._slot_of
                or key in seen
                or (name == REFUSED_TOTAL and _OWN_REFUSED.fullmatch(key))
            ):
                continue
            seen.add(key)
            n = per_metric.get(name, 0) + added.get(name, 0)
            if (self.max_series and total >= self.max_series) or (
                self.max_series_per_metric and n >= self.max_series_per_metric
            ):
                refused[key] = None
                continue
            if new >= room:  # the worker's bound, over every partition it holds
                refused[key] = None
                assert self.budget is not None
                self.budget.refused += 1
                continue
            total += 1
            new += 1
            added[name] = added.get(name, 0) + 1
        return refused

    @property
    def series_count(self) -> int:
        """Series holding a slot."""
        return len(self._slot_of)

    def refused_samples(self, partition: int, now_ms: int, every_ms: int) -> list[Sample]:
        """The change of ``refused_count`` since it was last published, as two samples of
        the COUNTER ``monitoring_series_refused_total{partition="<partition>"}`` at
        ``now_ms``: the count published before, then the count now. A window holding
        them shows the change on its own (``max - min``), as ``increase()`` does across
        windows. At most once per ``every_ms``; nothing while the count is unchanged.

        >>> agg = PartitionAggregator([10_000], 0, max_series=1)
        >>> kept, _ = agg.admit([Sample("a", "a", {}, 1, 1.0), Sample("b", "b", {}, 1, 1.0)])
        >>> _ = agg.process(0, kept)  # "a" holds the one slot
        >>> before, now = agg.refused_samples(3, 5_000, 10_000)
        >>> now.series, now.kind, (before.timestamp_ms, before.value), (now.timestamp_ms, now.value)
        ('monitoring_series_refused_total{partition="3"}', 'COUNTER', (5000, 0.0), (5000, 1.0))
        >>> _ = agg.admit([Sample("c", "c", {}, 2, 1.0)])
        >>> agg.refused_samples(3, 14_999, 10_000), agg.refused_samples(3, 15_000, 10_000)[1].value
        ([], 2.0)
        """
        last = self._refused_published_ms
        if self.refused_count == self.refused_published or (
            last is not None and now_ms < last + every_ms
        ):
            return []
        before, self.refused_published = self.refused_published, self.refused_count
        self._refused_published_ms = now_ms
        labels = {"partition": str(partition)}
        key = series_key(REFUSED_TOTAL, labels)
        return [
            Sample(key, REFUSED_TOTAL, labels, now_ms, float(v), "COUNTER", "")
            for v in (before, self.refused_count)
        ]

    def refused_due(self, every_ms: int) -> int | None:
        """When an unpublished change of ``refused_count`` may be published: the slot
        after the last publication; None if there is none (or nothing was published
        since the start: the next message publishes it)."""
        last = self._refused_published_ms
        if last is None or self.refused_count == self.refused_published:
            return None
        return last + every_ms

    def process(self, offset: int, samples: Sequence[Sample] | SampleBatch) -> Result:
        """Apply one message's samples (``Sample`` values, or columns from
        ``SampleDecoder.columns``); return windows the new watermark closed."""
        if offset <= self.checkpoint_offset:
            self.skipped_count += 1
            return Result([], [])
        self._forget_restored(offset)
        samples = without_stale(samples)  # markers end series for PromQL; no value here
        if isinstance(samples, SampleBatch):
            if len(samples.series_index) < self.vector_min:
                return self._step(offset, *self._scalar(offset, samples.samples()))
            return self._step(offset, *self._vector(offset, samples))
        if len(samples) < self.vector_min:
            return self._step(offset, *self._scalar(offset, samples))
        return self._step(offset, *self._vector(offset, SampleBatch.from_samples(samples)))

    def _forget_restored(self, offset: int) -> None:
        if self._restored_max >= 0 and offset > self._restored_max:
            self._restored[:] = -1
            self._restored_max = -1

    def _step(self, offset: int, late: list[Late], max_ts: int) -> Result:
        """Advance the watermark after a message; close the windows it passed."""
        self.late_count += len(late)
        self.last_offset = offset
        self.max_event_ms = max_ts
        closed: list[Aggregate] = []
        if max_ts != NO_WATERMARK and max_ts - self.allowed_lateness_ms > self.watermark_ms:
            self.watermark_ms = max_ts - self.allowed_lateness_ms
            closed = self._close_through(self.watermark_ms, "watermark")
        return Result(closed, late)

    def _scalar(self, offset: int, samples: Sequence[Sample]) -> tuple[list[Late], int]:
        slots = [self._slot(s.series, s.name, s.labels) for s in samples]  # may grow arrays
        wm, max_ts = self.watermark_ms, self.max_event_ms
        sizes, windows = self.windows_ms, self._windows
        closed_through = self._closed_through_by_size()
        applied, dirty, restored = self._applied, self._dirty, self._restored
        carry, carry_ts = self._carry, self._carry_ts
        horizon = wm - self.counter_horizon_ms
        replaying = self._restored_max >= 0
        late: list[Late] = []
        for s, slot in zip(samples, slots, strict=True):
            ts, v = s.timestamp_ms, s.value
            if replaying and offset <= restored[slot]:
                # applied before the crash; its event time still moves the watermark
                max_ts = max(max_ts, ts)
                continue
            prev_ts = int(carry_ts[slot])
            fresh = prev_ts >= horizon  # an older carry is forgotten, as if tombstoned
            in_order = ts >= prev_ts or not fresh
            step, reset = 0.0, False
            if in_order:  # the carry is NaN before the series' first sample
                step, reset = counter_step(float(carry[slot]) if fresh else math.nan, v)
                carry[slot], carry_ts[slot] = v, ts
            late_sizes: tuple[int, ...] = ()
            for k, w in enumerate(sizes):
                start = ts - ts % w
                if start + w <= closed_through[k]:
                    late_sizes += (w,)
                    continue
                win = windows[k].get(start) or self._window(k, start)
                win.add_one(slot, ts, v, step, reset, in_order)
            applied[slot] = offset
            dirty[slot] = True
            max_ts = max(max_ts, ts)
            if late_sizes:
                late.append(Late(s, late_sizes, wm))
        return late, max_ts

    def _vector(self, offset: int, batch: SampleBatch) -> tuple[list[Late], int]:
        wm, max_ts = self.watermark_ms, self.max_event_ms
        get = self._slot_of.get
        slots_of = [-1 if d is None else get(d.key, -1) for d in batch.series]
        if -1 in slots_of:
            for j, d in enumerate(batch.series):
                if d is not None and slots_of[j] < 0:
                    slots_of[j] = self._slot(d.key, d.name, d.labels)
        slots = np.array(slots_of, np.int64)[batch.series_index]
        ts, values, index = batch.timestamps_ms, batch.values, batch.series_index
        if self._restored_max >= 0:
            replayed = self._restored[slots] >= offset
            if replayed.any():
                # applied before the crash; their event times still move the watermark
                max_ts = max(max_ts, int(ts[replayed].max()))
                keep = ~replayed
                slots, ts, values, index = slots[keep], ts[keep], values[keep], index[keep]
                if not len(slots):
                    return [], max_ts
        steps, resets, in_order = self._counter_steps(slots, ts, values, wm)
        late_masks: list[tuple[int, np.ndarray]] = []
        closed_through = self._closed_through_by_size()
        for k, w in enumerate(self.windows_ms):
            starts = ts - ts % w
            is_late = starts + w <= closed_through[k]
            sl, st_, t_, v_, sp, rs, io = slots, starts, ts, values, steps, resets, in_order
            if is_late.any():
                late_masks.append((w, is_late))
                ok = ~is_late
                sl, st_, t_, v_, sp, rs = slots[ok], starts[ok], ts[ok], values[ok], sp[ok], rs[ok]
                io = None if io is None else io[ok]
                if not len(sl):
                    continue
            first = int(st_[0])
            if (st_ == first).all():
                self._window(k, first).add(sl, t_, v_, sp, rs, io)
                continue
            for start in np.unique(st_).tolist():
                m = st_ == start
                self._window(k, start).add(
                    sl[m], t_[m], v_[m], sp[m], rs[m], None if io is None else io[m]
                )
        self._applied[slots] = offset
        self._dirty[slots] = True
        max_ts = max(max_ts, int(ts.max()))
        late: list[Late] = []
        if late_masks:
            any_late = np.logical_or.reduce([m for _, m in late_masks])
            for j in np.flatnonzero(any_late).tolist():
                sizes = tuple(w for w, m in late_masks if m[j])
                sample = _sample(batch, int(index[j]), int(ts[j]), float(values[j]))
                late.append(Late(sample, sizes, wm))
        return late, max_ts

    def _counter_steps(
        self, slots: np.ndarray, ts: np.ndarray, values: np.ndarray, wm: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Per sample (arrival order): its counter step, whether it is a reset, and
        whether it is in the counter sequence (None: every one is, the usual case).
        Moves the carry to each series' newest sample. A previous sample older than
        ``wm - counter_horizon_ms`` is forgotten (as ``_scalar`` does)."""
        n = len(slots)
        horizon = wm - self.counter_horizon_ms
        carry, carry_ts, mark = self._carry, self._carry_ts, self._mark
        index = np.arange(n)
        mark[slots] = index
        order: np.ndarray | None = None
        tail: np.ndarray | None = None
        if (mark[slots] == index).all():  # each series once (a scrape): no grouping
            s, t, v = slots, ts, values
            prev_t, prev = carry_ts[slots], carry[slots]
        else:  # grouped by series, arrival order within: the predecessor is the one before
            keys = slots.astype(np.uint16) if self._cap <= 1 << 16 else slots
            order = np.argsort(keys, kind="stable")
            s, t, v = slots[order], ts[order], values[order]
            head = np.empty(n, bool)
            head[0] = True
            np.not_equal(s[1:], s[:-1], out=head[1:])
            tail = np.empty(n, bool)
            tail[-1] = True
            tail[:-1] = head[1:]
            prev_t, prev = np.empty(n, np.int64), np.empty(n)
            prev_t[1:], prev[1:] = t[:-1], v[:-1]
            prev_t[head], prev[head] = carry_ts[s[head]], carry[s[head]]
        fresh = prev_t >= horizon
        stale = None if fresh.all() else ~fresh
        ordered = t >= prev_t
        if stale is not None:
            ordered |= stale
        in_order: np.ndarray | None = None
        if ordered.all():
            if stale is not None:
                prev[stale] = math.nan
            step = v - prev  # NaN: no previous sample
            reset = step < 0
            if reset.any():
                step[reset] = v[reset]  # the counter restarted from 0
            unknown = np.isnan(step)
            if unknown.any():
                step[unknown] = 0.0
            if tail is None:
                carry[s], carry_ts[s] = v, t
            else:
                carry[s[tail]], carry_ts[s[tail]] = v[tail], t[tail]
        else:  # some series out of order: walk them (rare)
            step, reset, kept = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
            for j, (slot, tj, vj) in enumerate(
                zip(s.tolist(), t.tolist(), v.tolist(), strict=True)
            ):
                prev_ts = int(carry_ts[slot])
                if tj < prev_ts and prev_ts >= horizon:
                    continue
                kept[j] = True
                prev_v = float(carry[slot]) if prev_ts >= horizon else math.nan
                step[j], reset[j] = counter_step(prev_v, vj)
                carry[slot], carry_ts[slot] = vj, tj
            in_order = kept
        if order is None:
            return step, reset, in_order
        out_step, out_reset = np.empty(n), np.empty(n, bool)
        out_step[order], out_reset[order] = step, reset
        if in_order is not None:
            in_order = np.empty(n, bool)
            in_order[order] = kept
        return out_step, out_reset, in_order

    def close_idle(self) -> list[Aggregate]:
        """Close every open window (the partition has been idle); see module doc.

        >>> agg = PartitionAggregator([10_000, 60_000], 5_000)
        >>> _ = agg.process(0, [Sample("a", "a", {}, 149_000, 1.0)])
        >>> sorted((a.window_ms, a.window_end_ms) for a in agg.close_idle())
        [(10000, 150000), (60000, 180000)]
        >>> agg.watermark_ms  # not 180000: the 10 s windows after 150000 never opened
        150000
        >>> [x.window_sizes_ms for x in agg.process(1, [Sample("a", "a", {}, 151_000, 2.0)]).late]
        [(60000,)]
        """
        starts = [win.start for wins in self._windows for win in wins.values()]
        if not starts:
            return []
        # every open window starts by then (restored windows included)
        self.idle_event_ms = max(self.idle_event_ms, self.max_event_ms, *starts)
        ends = self._closed_through_by_size()
        self.watermark_ms = max(self.watermark_ms, min(ends))
        return self._close_through(max(ends), "idle")

    def _closed_through_by_size(self) -> list[int]:
        """Per window size, the end through which its windows are closed: the
        watermark, or the end of the window holding ``idle_event_ms`` (an idle close
        closed it) if later. A sample whose window ends by it is late for that size."""
        wm, idle = self.watermark_ms, self.idle_event_ms
        if idle == NO_WATERMARK:
            return [wm] * len(self.windows_ms)
        return [max(wm, idle - idle % w + w) for w in self.windows_ms]

    def pull_back(self, limit_ms: int) -> int:
        """Undo event time past ``limit_ms``, for a state restored from a checkpoint
        written before samples were bounded by their record's timestamp: a sample from
        the future had raised the watermark, and every on-time sample would be late
        until the clock got there. Windows starting after ``limit_ms`` are dropped (they
        hold nothing else); the greatest event time and the watermark come back to it.
        Returns the windows dropped, counted per series (0 if nothing was ahead)."""
        if self.max_event_ms <= limit_ms:
            return 0
        dropped = 0
        for wins in self._windows:
            for start in [s for s in wins if s > limit_ms]:
                win = wins.pop(start)
                self._dirty |= win.count > 0  # their series are written again
                dropped += int(np.count_nonzero(win.count))
        future = self._carry_ts > limit_ms  # the counter sequence restarts after them
        self._carry[future] = math.nan
        self._carry_ts[future] = NO_TS
        self._dirty |= future & self._used
        self.max_event_ms = limit_ms
        self.idle_event_ms = min(self.idle_event_ms, limit_ms)
        self.watermark_ms = min(self.watermark_ms, limit_ms - self.allowed_lateness_ms)
        self._next_end = min(
            (win.end for wins in self._windows for win in wins.values()), default=_NEVER
        )
        return dropped

    @property
    def open_windows(self) -> int:
        """Open windows, counted per series."""
        return sum(
            int(np.count_nonzero(win.count)) for wins in self._windows for win in wins.values()
        )

    def _slot(self, key: str, name: str, labels: Mapping[str, str]) -> int:
        slot = self._slot_of.get(key)
        return self._new_slot(key, name, labels) if slot is None else slot

    def _new_slot(self, key: str, name: str, labels: Mapping[str, str]) -> int:
        if self._free:
            slot = self._free.pop()
            self._keys[slot], self._names[slot], self._labels[slot] = key, name, labels
        else:
            slot = len(self._keys)
            self._keys.append(key)
            self._names.append(name)
            self._labels.append(labels)
            if slot >= self._cap:
                self._grow(max(64, 2 * self._cap))
        self._slot_of[key] = slot
        self._per_metric[name] = self._per_metric.get(name, 0) + 1
        self._used[slot] = True
        self._applied[slot] = -1
        self._restored[slot] = -1
        self._dirty[slot] = False
        self._carry[slot] = math.nan
        self._carry_ts[slot] = NO_TS
        return slot

    def _grow(self, cap: int) -> None:
        extra = cap - self._cap
        self._used = np.concatenate([self._used, np.zeros(extra, bool)])
        self._applied = np.concatenate([self._applied, np.full(extra, -1, np.int64)])
        self._dirty = np.concatenate([self._dirty, np.zeros(extra, bool)])
        self._restored = np.concatenate([self._restored, np.full(extra, -1, np.int64)])
        self._carry = np.concatenate([self._carry, np.full(extra, math.nan)])
        self._carry_ts = np.concatenate([self._carry_ts, np.full(extra, NO_TS, np.int64)])
        self._mark = np.zeros(cap, np.int64)
        for wins in self._windows:
            for win in wins.values():
                win.grow(cap)
        self._cap = cap

    def _window(self, k: int, start: int) -> WindowColumns:
        """The open window of size ``windows_ms[k]`` starting at ``start``, made if new."""
        win = self._windows[k].get(start)
        if win is None:
            w = self.windows_ms[k]
            win = self._windows[k][start] = WindowColumns(
                w, start, self._cap, self.relative_accuracy
            )
            self._next_end = min(self._next_end, win.end)
        return win

    def _close_through(self, until: int, reason: str) -> list[Aggregate]:
        if self._next_end > until:
            return []
        due = sorted(
            (win.end, k, win.start)
            for k, wins in enumerate(self._windows)
            for win in wins.values()
            if win.end <= until
        )
        out: list[Aggregate] = []
        keys, names, labels = self._keys, self._names, self._labels
        for end, k, start in due:
            win = self._windows[k].pop(start)
            self._dirty |= win.count > 0
            c = win.close()
            n = len(c.slots)
            out += map(
                Aggregate,
                [keys[i] for i in c.slots], [names[i] for i in c.slots],
                [labels[i] for i in c.slots], repeat(win.size, n), repeat(start, n),
                repeat(end, n), c.n, c.sum, c.min, c.max, c.mean, c.last, c.p50, c.p90, c.p99,
                repeat(reason, n), c.first, c.increase, c.resets,
            )  # fmt: skip
        self._next_end = min(
            (win.end for wins in self._windows for win in wins.values()), default=_NEVER
        )
        return out

    # -- checkpoints ----------------------------------------------------------------
    def checkpoint(self) -> Checkpoint:
        """Records for the changelog since the last checkpoint; see module doc.

        Series without open windows that were already covered by the previous
        checkpoint are tombstoned and their slots freed.
        """
        previous = self.checkpoint_offset
        dirty = np.flatnonzero(self._dirty)
        windows: dict[int, list[dict[str, Any]]] = {slot: [] for slot in dirty.tolist()}
        has_open = np.zeros(self._cap, bool)
        for wins in self._windows:
            for start in sorted(wins):
                win = wins[start]
                has_open |= win.count > 0
                for slot, state in win.states(dirty):
                    windows[slot].append(state)
        applied, carry, carry_ts = self._applied, self._carry, self._carry_ts
        records: list[tuple[str, dict[str, Any] | None]] = sorted(
            (
                (
                    self._keys[slot],
                    {
                        "applied_offset": int(applied[slot]),
                        "carry": float(carry[slot]),
                        "carry_ts": int(carry_ts[slot]),
                        "windows": ws,
                    },
                )
                for slot, ws in windows.items()
            ),
            key=lambda r: r[0],
        )
        # a series keeps its slot while its carry is within the horizon
        carry_gone = (carry_ts == NO_TS) | (carry_ts < self.watermark_ms - self.counter_horizon_ms)
        gone = self._used & ~has_open & (applied <= previous) & ~self._dirty & carry_gone
        for slot in np.flatnonzero(gone).tolist():
            key = self._keys[slot]
            records.append((key, None))
            del self._slot_of[key]
            name = self._names[slot]
            left = self._per_metric[name] - 1
            if left:
                self._per_metric[name] = left
            else:
                del self._per_metric[name]
            self._used[slot] = False
            self._free.append(slot)
        self._dirty[:] = False
        self.checkpoint_offset = max(self.checkpoint_offset, self.last_offset)
        meta = {
            "checkpoint_offset": self.checkpoint_offset,
            "max_event_ms": self.max_event_ms,
            "watermark_ms": self.watermark_ms,
            "idle_event_ms": self.idle_event_ms,
            "refused_count": self.refused_count,
            "refused_published": self.refused_published,
        }
        return Checkpoint(self.checkpoint_offset, records, meta)

    @property
    def has_changes(self) -> bool:
        return bool(self._dirty.any()) or self.last_offset > self.checkpoint_offset

    def restore(self, meta: Mapping[str, Any] | None, series: Iterable[Mapping[str, Any]]) -> None:
        """Load the latest changelog records (tombstoned keys already removed)."""
        if meta is not None:
            self.checkpoint_offset = meta["checkpoint_offset"]
            self.last_offset = self.checkpoint_offset
            self.max_event_ms = meta["max_event_ms"]
            self.watermark_ms = meta["watermark_ms"]
            self.idle_event_ms = meta.get("idle_event_ms", NO_WATERMARK)
            self.refused_count = meta.get("refused_count", 0)
            self.refused_published = meta.get("refused_published", 0)
        for rec in series:
            slot = self._new_slot(rec["series"], rec["name"], dict(rec["labels"]))
            applied = self._applied[slot] = rec["applied_offset"]
            self._carry[slot] = rec.get("carry", math.nan)
            self._carry_ts[slot] = rec.get("carry_ts", NO_TS)
            if applied > self.checkpoint_offset:
                self._restored[slot] = applied
                self._restored_max = max(self._restored_max, applied)
            for win in rec["windows"]:
                k = self._size_index[win["window_ms"]]
                self._window(k, win["start_ms"]).restore(slot, win)


_NEVER = 2**63 - 1


def counter_step(prev: float, value: float) -> tuple[float, bool]:
    """What a counter sample ``value`` adds after the series' previous one ``prev`` (NaN:
    none, or one older than the counter horizon), and whether it is a reset: a value
    below ``prev`` means the counter restarted from 0, so all of ``value`` is new. The
    per-sample form of ``_counter_steps``' arrays (which the scalar path and its
    out-of-order walk use).

    >>> counter_step(10.0, 15.0), counter_step(10.0, 4.0), counter_step(float("nan"), 7.0)
    ((5.0, False), (4.0, True), (0.0, False))
    """
    if prev != prev:
        return 0.0, False
    if value < prev:
        return value, True
    return value - prev, False


def _sample(batch: SampleBatch, i: int, ts: int, value: float) -> Sample:
    d = batch.series[i]
    assert d is not None
    return Sample(d.key, d.name, d.labels, ts, value, d.kind, d.unit)


_FACADE = ("MetricsAggregator", "AggregationRules", "AggregatedMetric")


def __getattr__(name: str) -> Any:
    """The documented ``MetricsAggregator`` (``monitoring.facade.aggregator``), imported on
    use: it is an adapter (pipeline mode reads the store), this module stays pure."""
    if name in _FACADE:
        from monitoring.facade import aggregator as facade

        return getattr(facade, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
