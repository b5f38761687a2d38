"""Alerting agent: aggregates topic -> rule evaluation as windows close -> alerts topic.

Thin wiring around ``monitoring.alerts.evaluator.AlertEngine`` (window history, PromQL
subset, one state machine per rule) and ``monitoring.alerts.watermark.EvaluationClock``
(when every window ending at ``T`` has arrived). Rules such as ``sum by (job) (...)``
need every series at once, so unlike the Faust agents this one reads *all* partitions
of the aggregates topic (``assign``, no consumer group), as Prometheus evaluates all
series in one place. One is active per deployment (``monitoring alerts evaluate``);
with ``ha.enabled`` more may run: the holder of the ``alerting`` lease evaluates, the
others stand by reading the state topic (``runtime/lease.py``, docs/ha.md).

State: the engine's alert states and the last evaluated end time go to the compacted
``alerts.state`` topic every ``alerting.checkpoint_interval``, after the alerts sent
so far were acknowledged by the broker. The window history is not checkpointed: on
start the agent re-reads the aggregates of the rules' longest range plus the lookback
(by Kafka timestamp) and evaluates only ends after the checkpoint, so a restart
neither re-fires nor forgets an alert. Alerts emitted after the last checkpoint may be
emitted again after a crash; the notifier de-duplicates them (same fingerprint,
status and start).

Firing alerts are re-sent every ``alerting.resend_interval`` of evaluation time with
a horizon (``ends_at_ms``) four intervals ahead, and ``alerting.watchdog`` adds the
always-firing ``Watchdog`` rule: if evaluations stop, the notifier resolves it.

Start-up: the end offset of every partition is taken at start, and until each
partition has been read that far the clock is catching up (``EvaluationClock``): every
partition with a backlog counts and no end is due by the grace, so that the backlog is
evaluated end by end with every partition's windows. Windows ending more than one
window after the wall clock are not taken (nor is a checkpointed position that far
ahead): a sample from the future must not move the evaluation past every real end.

Bad input: a record that is not an ``Aggregate`` (garbage, another record type, an
unknown schema version), one over ``kafka.max_message_bytes``, or a window ending off
the window grid or in the future is dead-lettered with its reason and skipped. The
dead-letter producer never blocks evaluation: its queue is bounded and a dead letter it
cannot take at once is dropped (logged, counted in ``alerting_dead_letter_failures``).
"""

from __future__ import annotations

import gc
import glob
import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from monitoring.alerts.alert_series import ALERTS, ALERTS_FOR_STATE
from monitoring.alerts.evaluator import AlertEngine
from monitoring.alerts.model import Recorded
from monitoring.alerts.rules import Rule, RuleSet, load_rule_files, load_rule_objects
from monitoring.alerts.watchdog import with_watchdog
from monitoring.alerts.watermark import EvaluationClock
from monitoring.config import ConfigError, Settings, ms
from monitoring.log import get_logger
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import InvalidSample
from monitoring.runtime import consume, topics
from monitoring.runtime.changelog import read_table
from monitoring.runtime.lease import Lease
from monitoring.runtime.outputs import DeadLetters, Outputs
from monitoring.runtime.standby import TableTail, run_in_terms, take_over
from monitoring.runtime.state_chunks import ChunkedRecords, join
from monitoring.wire.aggregate_encoding import AggregateDecoder, closed_through
from monitoring.wire.alert_encoding import ALERT, to_record
from monitoring.wire.codec import AvroCodec, DecodeError
from monitoring.wire.sample_encoding import SampleEncoder, SeriesRef, make_series

log = get_logger("alerting")
# The window history is hundreds of thousands of small objects: with Python's default
# thresholds the cyclic GC walks them every few hundred allocations, which doubled the
# evaluation time per close and its worst case (232 -> 139 ms, 514 -> 181 ms measured
# with `bench alerts`' 1,000 rules over 10,000 series). Nothing here forms cycles.
GC_THRESHOLD = (50_000, 20, 100)
STATE_KEY = b"engine"
Headers = Sequence[tuple[str, Any]] | dict[str, Any]  # as confluent-kafka types them
STATE_VERSION = 1
RECORDING_SOURCE = "recording-rules"  # the samples' source field
ALERTS_SOURCE = "alerting-rules"  # the source field of ALERTS and ALERTS_FOR_STATE samples
SERIES_CACHE_MAX = 100_000
OWN_ENDS_MAX = 10_000
DEAD_LETTER_QUEUE_KBYTES = 16 * 1024  # dead letters waiting for the broker, at most
DEAD_LETTER_FLUSH_S = 5.0  # at the end of a term


def load_rules(patterns: list[str], definitions: Sequence[Mapping[str, Any]] = ()) -> RuleSet:
    """Load the rule files matching ``patterns`` (globs), as a whole or not at all.

    Raises ``ConfigError`` naming every problem (file, group, rule, reason) when a file
    is missing (a glob matching nothing is a missing file), unreadable or holds a bad
    rule, or when no rule loads at all: an evaluator with fewer rules than configured
    would look healthy while it alerts on less. (The built-in Watchdog is added later
    and does not count: alone, it is not a rule set anyone configured.) ``definitions``
    are the rules written in the settings (``alerting.definitions``), loaded too.
    """
    if not patterns and not definitions:
        raise ConfigError("alerting.rules: no rule files (set alerting.rules or pass --rules)")
    paths = sorted({p for pat in patterns for p in (glob.glob(pat) or [pat])})
    ruleset = load_rule_files(paths)
    if definitions:
        ruleset.extend(load_rule_objects(list(definitions)))
    if ruleset.errors:
        problems = "; ".join(str(e) for e in ruleset.errors[:20])
        more = len(ruleset.errors) - 20
        raise ConfigError(
            f"alerting.rules: {problems}" + (f"; and {more} more" if more > 0 else "")
        )
    if not ruleset.rules and not ruleset.recordings:
        raise ConfigError(f"alerting.rules: no rules in {', '.join(paths)}")
    return ruleset


def own_names(ruleset: RuleSet) -> frozenset[str]:
    """The names of the series the evaluator writes: ALERTS, ALERTS_FOR_STATE and the
    recording rules' records."""
    return frozenset({ALERTS, ALERTS_FOR_STATE, *(r.record for r in ruleset.recordings)})


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.windows = Counter("alerting_windows", "Windows read", registry=registry)
        self.evaluations = Counter(
            "alerting_evaluations", "Evaluations (one per window end)", registry=registry
        )
        self.eval_seconds = Histogram(
            "alerting_evaluation_seconds", "Time to evaluate every rule at one end",
            registry=registry, buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.alerts = Counter(
            "alerting_alerts",
            "Alerts sent (state changes, re-sends)",
            ["status"],
            registry=registry,
        )
        self.rule_errors = Gauge(
            "alerting_rule_errors", "Rules whose last evaluation failed", registry=registry
        )
        self.rules = Gauge("alerting_rules", "Rules loaded", registry=registry)
        self.reload_ok = Gauge(
            "alerting_rules_last_reload_successful",
            "1 if the last rule reload loaded every file (else the previous rules run on)",
            registry=registry,
        )
        self.failures = Counter(
            "alerting_evaluation_failures", "Evaluations that raised", registry=registry
        )
        self.invalid = Counter(
            "alerting_invalid_messages", "Undecodable messages skipped", ["reason"],
            registry=registry,
        )  # fmt: skip
        self.recorded = Counter(
            "alerting_recorded_samples", "Samples written by recording rules", registry=registry
        )
        self.not_recorded = Counter(
            "alerting_recorded_dropped",
            "Recording rule outputs not written (non-finite value, invalid series)",
            ["reason"],
            registry=registry,
        )
        self.alert_samples = Counter(
            "alerting_alert_series_samples",
            "ALERTS and ALERTS_FOR_STATE samples written (staleness markers included)",
            registry=registry,
        )
        self.alert_samples_dropped = Counter(
            "alerting_alert_series_dropped",
            "ALERTS and ALERTS_FOR_STATE samples not written (invalid series)",
            ["reason"],
            registry=registry,
        )
        self.dead_letter_failures = Counter(
            "alerting_dead_letter_failures",
            "Dead letters not sent (the producer's queue full or refusing)",
            registry=registry,
        )
        self.recording_errors = Gauge(
            "alerting_recording_rule_errors",
            "Recording rules whose last evaluation failed",
            registry=registry,
        )


class AlertingAgent:
    """Reads every aggregates partition, evaluates rules as windows close, sends alerts."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        ruleset: RuleSet | None = None,
        codec: AvroCodec | None = None,
        rule_patterns: list[str] | None = None,
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.settings = settings
        self.dead_letters = dead_letters  # made by ``start`` when not given
        a = settings.alerting
        k = settings.kafka
        self.codec = codec or AvroCodec.from_directory()
        self.decoder = AggregateDecoder(self.codec)
        self.metrics = _Metrics(registry)
        self.rule_patterns = list(a.rules if rule_patterns is None else rule_patterns)
        self.ruleset = (
            ruleset if ruleset is not None else load_rules(self.rule_patterns, a.definitions)
        )
        self.metrics.reload_ok.set(1)
        self._own_names = own_names(self.ruleset)
        self._own_ends: set[int] = set()  # ends only the own series reached (``_own_end``)
        self._reload_requested = False
        self._reload_error: str | None = None
        self.engine = self._new_engine()
        self.metrics.rules.set(len(self.ruleset.rules))
        self.window_ms = ms(a.window)
        self.clock = self._new_clock()
        self._catch_up: dict[int, int] = {}  # partition -> end offset taken at start
        self.source = topics.topic_name(k, topics.AGGREGATES)
        self.alerts_topic = topics.topic_name(k, topics.ALERTS)
        self.samples_topic = topics.topic_name(k, topics.SAMPLES)
        self.encode_sample = SampleEncoder(self.codec, RECORDING_SOURCE).encode
        self.encode_alert_sample = SampleEncoder(self.codec, ALERTS_SOURCE).encode
        self._series: dict[tuple[str, tuple[tuple[str, str], ...]], SeriesRef] = {}
        self.state_topic = topics.topic_name(k, topics.ALERTING_STATE)
        self.outputs: Outputs = Outputs(k)
        self.chunks = ChunkedRecords(k.max_message_bytes)
        self.consumer: Consumer | None = None
        self.lease: Lease | None = None  # with HA: held while this instance is active
        self.role = "single"  # or standby / active (docs/alerting.md, High availability)
        self._dirty = False
        # windows more than one end past the last evaluated one wait here, so that
        # evaluating an end sees the history as it was at that end even when a backlog
        # arrives at once (the history trims by the newest window of each series)
        self._ahead: dict[int, list[Aggregate]] = {}

    def _new_clock(self) -> EvaluationClock:
        a = self.settings.alerting
        return EvaluationClock(
            ms(a.grace),
            ms(a.settle),
            live_ms=max(3 * self.window_ms, 30_000),
            max_ahead_ms=self.window_ms,
        )

    def _rules(self) -> list[Rule]:
        """The loaded rules, and the built-in Watchdog (``alerting.watchdog``)."""
        rules = self.ruleset.rules
        return with_watchdog(rules) if self.settings.alerting.watchdog else list(rules)

    def _new_engine(self) -> AlertEngine:
        a = self.settings.alerting
        return AlertEngine(
            self._rules(),
            recordings=self.ruleset.recordings,
            window_ms=ms(a.window),
            lookback_ms=ms(a.lookback),
            generator_url=a.generator_url,
            resend_ms=ms(a.resend_interval),
        )

    def health(self) -> dict[str, Any]:
        """For ``GET /healthz``."""
        return {
            "status": "ok",
            "rules": len(self.ruleset.rules),
            "recording_rules": len(self.ruleset.recordings),
            "rejected_rules": len(self.ruleset.errors),
            "last_reload_error": self._reload_error,
            "catching_up": sorted(self.clock.catching_up),  # partitions reading their backlog
            "rule_errors": [f"{r.name}: {e}" for r, e in self.engine.errors][:20],
            "recording_rule_errors": [f"{r.record}: {e}" for r, e in self.engine.recording_errors][
                :20
            ],
            "last_evaluated_ms": self.clock.last_evaluated_ms,
            "firing": len(self.engine.firing()),
            "watchdog": self.settings.alerting.watchdog,
            "role": self.role,
        }

    # -- rules: reload as a whole or keep the old ones ---------------------------------
    def request_reload(self) -> None:
        """Reload the rule files at the next turn of the loop (safe in a signal handler)."""
        self._reload_requested = True

    def reload_rules(self) -> bool:
        """Load ``rule_patterns`` again; switch only if every file loads, as Prometheus
        does: otherwise the running rules stay and the log says why."""
        self._reload_requested = False
        try:
            ruleset = load_rules(self.rule_patterns, self.settings.alerting.definitions)
        except ConfigError as e:
            self._reload_error = str(e)
            self.metrics.reload_ok.set(0)
            log.error("rules_reload_failed", error=str(e), kept_rules=len(self.ruleset.rules))
            return False
        self.ruleset = ruleset
        self._own_names = own_names(ruleset)
        self.engine.set_rules(self._rules(), ruleset.recordings)
        self._reload_error = None
        self.metrics.reload_ok.set(1)
        self.metrics.rules.set(len(ruleset.rules))
        log.info("rules_reloaded", rules=len(ruleset.rules))
        return True

    # -- start: restore and position -------------------------------------------------
    def _restore(self, raw: bytes) -> None:
        state = json.loads(raw)
        if state.get("v") != STATE_VERSION:
            raise ValueError(f"{self.state_topic}: unknown state version {state.get('v')}")
        self.engine.restore(state["engine"].encode())
        self.clock.last_evaluated_ms = self._sane_position(state["last_evaluated_ms"])

    def start(self, table: dict[bytes, bytes] | None = None) -> None:
        """Restore the checkpoint (``table``: the state topic as a standby read it, else
        read now) and assign every aggregates partition from the horizon."""
        k = self.settings.kafka
        if table is None:
            table = read_table(k, self.state_topic, 0)
        self.chunks.learn(table)
        joined = join(table)
        raw = joined.table.get(STATE_KEY)
        if joined.broken:
            self.metrics.invalid.labels("bad-state").inc()
            log.error("state_chunks_broken", topic=self.state_topic)
        if raw is not None:
            try:
                self._restore(raw)
            except Exception as e:  # an unreadable state must not crash-loop the evaluator
                self.metrics.invalid.labels("bad-state").inc()
                log.error("state_unreadable", topic=self.state_topic, error=repr(e)[:300])
                self.engine = self._new_engine()
                self.clock.last_evaluated_ms = 0
        if self.dead_letters is None:
            self.dead_letters = DeadLetters(
                k, topics.topic_name(k, topics.DEAD_LETTER), "alerting",
                wait_s=0, max_queue_kbytes=DEAD_LETTER_QUEUE_KBYTES,
            )  # fmt: skip
        # never commits: the state has the positions
        group = f"{k.topic_prefix}alerting"
        c = self.consumer = consume.new_consumer(k, group, **{"fetch.wait.max.ms": 20})
        parts = consume.partitions(c, self.source)
        horizon = self.engine.history.retention_ms + ms(self.settings.alerting.lookback) + 60_000
        since = (self.clock.last_evaluated_ms or int(time.time() * 1000)) - horizon
        start = consume.offsets_at(c, self.source, parts, since)
        # the backlog: what each partition holds now, read before the clock leaves catch-up
        ends = consume.end_offsets(c, self.source, parts)
        self.consumer.assign(start)
        self.begin_catch_up({tp.partition: tp.offset for tp in start}, ends)
        log.info(
            "alerting_started",
            rules=len(self.ruleset.rules),
            rejected=len(self.ruleset.errors),
            partitions=len(parts),
            last_evaluated_ms=self.clock.last_evaluated_ms,
            replay_from_ms=since,
            catching_up=sorted(self._catch_up),
        )

    def _sane_position(self, last_evaluated_ms: int) -> int:
        """A checkpointed position more than a window ahead of the clock (written by a
        version that took windows from the future) is pulled back to now: kept, the
        evaluator would evaluate nothing until the clock got there."""
        now = int(time.time() * 1000)
        if last_evaluated_ms <= now + self.window_ms:
            return last_evaluated_ms
        sane = now - now % self.window_ms
        log.warning("position_in_future", last_evaluated_ms=last_evaluated_ms, reset_to_ms=sane)
        return sane

    def begin_catch_up(self, start: dict[int, int], ends: dict[int, int]) -> None:
        """Partitions starting below their end offset (``start``: the first offset to
        read, negative for the end) catch up before the clock leaves catch-up."""
        self._catch_up = {p: end for p, end in ends.items() if 0 <= start.get(p, OFFSET_END) < end}
        self.clock.assign(ends, int(time.time() * 1000))
        self.clock.begin_catch_up(self._catch_up)

    def progress(self, partition: int, next_offset: int, now_ms: int) -> None:
        """``partition`` was read up to ``next_offset`` (exclusive)."""
        end = self._catch_up.get(partition)
        if end is not None and next_offset >= end:
            del self._catch_up[partition]
            self.clock.caught_up(partition, now_ms)
            if not self._catch_up:
                log.info("alerting_caught_up", last_evaluated_ms=self.clock.last_evaluated_ms)

    def _check_positions(self) -> None:
        """Catch-up by the consumer's positions (a partition's last records may be
        transaction markers, never delivered)."""
        if not self._catch_up or self.consumer is None:
            return
        now = int(time.time() * 1000)
        tps = [TopicPartition(self.source, p) for p in self._catch_up]
        for tp in self.consumer.position(tps):
            if tp.offset >= 0:
                self.progress(tp.partition, tp.offset, now)

    # -- the loop --------------------------------------------------------------------
    async def take_over(self, lease: Lease, stop: threading.Event) -> bool:
        """Stand by, reading the state topic, until ``lease`` is held; then fence the
        former holder, restore and start (False if ``stop`` came first)."""
        self.role = "standby"
        tail = TableTail(self.settings.kafka, self.state_topic)
        try:
            outputs = await take_over(self.settings.kafka, lease, [tail], stop)
            if outputs is None:
                return False
            self.outputs, self.lease = outputs, lease
            self.start(dict(tail.table))
        finally:
            tail.close()
        self.role = "active"
        return True

    def _new_term(self) -> None:
        """Forget an ended term: the next one restores from the committed state."""
        self.engine = self._new_engine()
        self.clock = self._new_clock()
        self._catch_up, self._ahead, self._own_ends = {}, {}, set()
        self.chunks = ChunkedRecords(self.settings.kafka.max_message_bytes)
        self.consumer, self.lease, self._dirty = None, None, False
        self.outputs = Outputs(self.settings.kafka)

    async def run(self, stop: threading.Event) -> None:
        """Evaluate until ``stop`` is set; with ``ha.enabled``, while this instance holds
        the ``alerting`` lease (``runtime.standby.run_in_terms``)."""
        await run_in_terms(self.settings, "alerting", self, stop)

    async def _run_term(self, stop: threading.Event) -> None:
        """Consume, evaluate due ends, checkpoint; until ``stop`` is set (or, active
        under a lease, until it is lost: ``Fenced``)."""
        if self.consumer is None:
            self.start()
        assert self.consumer is not None
        gc.set_threshold(*GC_THRESHOLD)
        cadence = consume.Cadence(self.settings.alerting.checkpoint_interval.total_seconds())
        try:
            while not stop.is_set():
                consume.check_lease(self.lease, "alerting")
                if self._reload_requested:
                    self.reload_rules()
                for msg in consume.fetch(self.consumer, 5000, 0.05, self.settings.kafka):
                    self.handle(
                        msg.partition() or 0, msg.value(), msg.headers(), msg.offset(), msg.key()
                    )
                if self.dead_letters is not None:
                    self.dead_letters.poll()
                self._check_positions()
                await self.evaluate_due(int(time.time() * 1000))
                await cadence.step(self._dirty, self.outputs, self.checkpoint)
            await self.checkpoint()
        finally:
            consume.end_term(self.consumer, self.outputs)
            if self.dead_letters is not None and self.dead_letters.sent:
                self.dead_letters.flush(DEAD_LETTER_FLUSH_S)

    def handle(
        self,
        partition: int,
        value: bytes | None,
        headers: Headers | None = None,
        offset: int | None = None,
        key: bytes | None = None,
    ) -> None:
        """One aggregates message: into the history (or the buffer ahead), and the clock
        (with the close's completion mark, if the message carries one); a bad one to the
        dead-letter topic."""
        now = int(time.time() * 1000)
        if offset is not None:
            self.progress(partition, offset + 1, now)
        limit = self.settings.kafka.max_message_bytes
        try:
            if isinstance(value, bytes) and len(value) > limit:
                raise DecodeError("oversized", f"{len(value)} bytes, at most {limit}")
            agg = self.decoder.decode(value)
        except DecodeError as e:
            self._dead_letter(partition, offset, key, value, e.reason, str(e))
            return  # nor is its completion mark believed
        if agg.window_ms != self.window_ms:
            if headers:
                self._mark(partition, headers)
            return
        self.metrics.windows.inc()
        end = agg.window_end_ms
        if end % self.window_ms:
            # the worker's windows end on multiples of their size: any other end would
            # be an evaluation of its own (and ALERTS samples at that time)
            detail = f"window end {end} is no multiple of {self.window_ms} ms"
            self._dead_letter(partition, offset, key, value, "window-off-grid", detail)
        elif not (
            self._own_end(end, now)
            if agg.name in self._own_names
            else self.clock.observe(partition, end, now)
        ):
            # from the future: evaluating it would skip every end before it
            detail = f"window end {end} is more than a window after {now}"
            self._dead_letter(partition, offset, key, value, "window-in-future", detail)
        else:
            last = self.clock.last_evaluated_ms
            if end <= last or (last and end <= last + self.window_ms):
                # late, re-read after a restart, or the next end: into the history now,
                # so that evaluating it once due does not start with adding its windows
                self.engine.add(agg)
            else:
                self._ahead.setdefault(end, []).append(agg)
        if headers:
            self._mark(partition, headers)

    def _own_end(self, end: int, now: int) -> bool:
        """A window of the evaluator's own series (ALERTS, recorded) ending at ``end``;
        False if from the future. Its end is evaluated, but only with a later end of
        other data: written at ``T``, these samples are in the window ending ``T + W``,
        which the worker closes idle when no other data comes; due by itself, that end
        was evaluated and wrote the next one: event time ran on alone, a window per idle
        timeout, with no data (absent() fired, the Watchdog never stopped)."""
        if end > now + self.window_ms:
            return False
        if end > self.clock.last_evaluated_ms and len(self._own_ends) < OWN_ENDS_MAX:
            self._own_ends.add(end)
        return True

    def _due(self, now_ms: int) -> list[int]:
        """The clock's due ends, and before each the own series' ends not yet evaluated."""
        due = self.clock.due(now_ms)
        if not due or not self._own_ends:
            return due
        own = {e for e in self._own_ends if e < due[-1]}
        self._own_ends -= own
        self._own_ends -= {due[-1]}
        return sorted(own | set(due))

    def _dead_letter(
        self,
        partition: int,
        offset: int | None,
        key: bytes | None,
        value: bytes | None,
        reason: str,
        detail: str,
    ) -> None:
        """Count ``reason`` and send the record to the dead-letter topic without waiting."""
        self.metrics.invalid.labels(reason).inc()
        if self.dead_letters is None:  # no producer (tests driving ``handle``)
            log.warning("dead_letter_dropped", reason=reason, error=detail[:200])
            return
        source = (self.source, partition, offset or 0)
        if not self.dead_letters.send(key, value, reason, detail, source):
            self.metrics.dead_letter_failures.inc()

    def _mark(self, partition: int, headers: Headers) -> None:
        try:
            through = closed_through(headers)
        except ValueError:
            self.metrics.invalid.labels("bad-header").inc()
            return
        if through is not None:
            self.clock.complete(partition, through, int(time.time() * 1000))

    async def evaluate_due(self, now_ms: int) -> None:
        """Evaluate every end that is due and send the alerts whose state changed."""
        for end in self._due(now_ms):
            t0, c0 = time.perf_counter(), time.thread_time()
            for ready in sorted(e for e in self._ahead if e <= end):
                for agg in self._ahead.pop(ready):
                    self.engine.add(agg)
            try:
                changed = self.engine.evaluate(end)
            except Exception as e:  # a bug in one rule must not stop the others for good
                log.error("evaluation_failed", at_ms=end, error=repr(e)[:500])
                self.metrics.failures.inc()
                continue
            self.metrics.eval_seconds.observe(time.perf_counter() - t0)
            self.metrics.evaluations.inc()
            self.metrics.rule_errors.set(len(self.engine.errors))
            for alert in changed:
                self.metrics.alerts.labels(alert.status).inc()
                await self.outputs.send(
                    self.alerts_topic,
                    alert.name.encode(),
                    self.codec.encode(ALERT, to_record(alert, evaluated_at_ms=end)),
                )
            await self._record(end)
            if changed:
                self.outputs.poll()
            log.info(
                "evaluated",
                at_ms=end,
                alerts=len(changed),
                lag_ms=int(time.time() * 1000) - end,  # since the window's end, wall clock
                eval_ms=round((time.perf_counter() - t0) * 1000, 1),
                cpu_ms=round((time.thread_time() - c0) * 1000, 1),  # this thread's CPU
            )
            self._dirty = True

    async def _record(self, end: int) -> None:
        """Write the recording rules' output and the alerts' ``ALERTS`` series at ``end``
        to the samples topic."""
        m = self.metrics
        if self.settings.alerting.alert_series:
            await self._write(end, self.engine.alert_samples, self.encode_alert_sample,
                              m.alert_samples, m.alert_samples_dropped)  # fmt: skip
        if not self.engine.recordings:
            return
        dropped = self.engine.dropped
        recorded = self.engine.record(end)
        if self.engine.dropped > dropped:
            m.not_recorded.labels("non-finite").inc(self.engine.dropped - dropped)
        m.recording_errors.set(len(self.engine.recording_errors))
        await self._write(end, recorded, self.encode_sample, m.recorded, m.not_recorded)

    async def _write(
        self,
        end: int,
        samples: Sequence[Recorded],
        encode: Callable[[SeriesRef, int, float], bytes],
        written: Counter,
        refused: Counter,
    ) -> None:
        """``samples`` at ``end`` on the samples topic, keyed by series as the SDK keys them;
        one whose series the samples contract refuses is counted in ``refused``."""
        for r in samples:
            try:
                series = self._series_ref(r.name, r.labels)
            except InvalidSample as e:
                refused.labels(e.reason).inc()
                continue
            await self.outputs.send(
                self.samples_topic, series.key.encode(), encode(series, end, r.value)
            )
            written.inc()

    def _series_ref(self, name: str, labels: dict[str, str]) -> SeriesRef:
        key = (name, tuple(labels.items()))
        ref = self._series.get(key)
        if ref is None:
            if len(self._series) >= SERIES_CACHE_MAX:
                self._series.clear()
            ref = self._series[key] = make_series(name, labels)
        return ref

    async def checkpoint(self) -> None:
        """Alerts acknowledged first, then the state; retried at the next interval."""
        if not self._dirty or not await self.outputs.flush():
            return
        state = {
            "v": STATE_VERSION,
            "engine": self.engine.to_bytes().decode(),
            "last_evaluated_ms": self.clock.last_evaluated_ms,
        }
        holder = getattr(self.outputs, "holder", None)  # who wrote it, with HA
        headers = [("x-holder", holder)] if holder else None
        for key, value in self.chunks.expand(STATE_KEY, json.dumps(state).encode()):
            # chunks when over the limit
            await self.outputs.send(self.state_topic, key, value, headers=headers)
        if await self.outputs.flush():
            self._dirty = False
