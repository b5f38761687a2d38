"""ModelMonitor: the join in both orders, expiry, exact accuracy / MAE counters, drift
samples, replay skipping, and a checkpoint round trip equal to an uninterrupted run."""

from __future__ import annotations

import random

import pytest

from monitoring.metrics.samples import Sample
from monitoring.mlops.events import (
    InvalidModelEvent,
    Label,
    Prediction,
    label_from_record,
    prediction_from_record,
)
from monitoring.mlops.monitor import (
    META_KEY,
    ModelMonitor,
    MonitorConfig,
    apply_records,
)

T0 = 1_700_000_000_000
M = {"model": "churn", "version": "2"}


def pred(pid: str, ts: int, cls: str | None = None, value: float | None = None, **kw) -> Prediction:
    return Prediction(pid, "churn", "2", ts, cls, value, kw.pop("latency", None), **kw)


def by_name(samples: list[Sample], name: str) -> list[tuple[int, float]]:
    return [(s.timestamp_ms, s.value) for s in samples if s.name == name]


def totals(feed: Feed) -> dict[str, float]:
    """The counters' last values once the partition is closed (everything published)."""
    return {s.name: s.value for s in feed.sent + feed.m.close() if s.kind == "COUNTER"}


class Feed:
    """Gives each topic increasing offsets, as Kafka does."""

    def __init__(self, monitor: ModelMonitor) -> None:
        self.m = monitor
        self.offsets = {"p": 0, "l": 0}
        self.sent: list[Sample] = []

    def p(self, p: Prediction) -> list[Sample]:
        self.offsets["p"] += 1
        out = self.m.apply_prediction(self.offsets["p"], p)
        assert out is not None
        self.sent += out
        return out

    def l(self, label: Label) -> list[Sample]:  # noqa: E743
        self.offsets["l"] += 1
        out = self.m.apply_label(self.offsets["l"], label)
        assert out is not None
        self.sent += out
        return out


def test_join_prediction_first_and_label_first_give_the_same_outcome() -> None:
    a, b = Feed(ModelMonitor()), Feed(ModelMonitor())
    p, lab = pred("x1", T0, "yes", latency=12.5), Label("x1", T0 + 30_000, "no")
    first = a.p(p)
    assert by_name(first, "model_latency_ms") == [(T0, 12.5)]
    assert [s.name for s in a.l(lab)] == ["model_accuracy_rolling"]  # counts wait
    assert b.l(lab) == []  # waits for its prediction
    b.p(p)
    assert a.m.pending == b.m.pending == 0
    assert a.m.counts["joined"] == b.m.counts["joined"] == 1
    out_a, out_b = a.m.close(), b.m.close()
    assert sorted((s.series, s.timestamp_ms, s.value, s.kind) for s in out_a) == [
        ('model_correct_count{model="churn",partition="0",version="2"}', T0 + 39_999, 1.0,
         "COUNTER"),
        ('model_correct_sum{model="churn",partition="0",version="2"}', T0 + 39_999, 0.0,
         "COUNTER"),
        ('model_predictions_total{model="churn",partition="0",version="2"}', T0 + 9_999, 1.0,
         "COUNTER"),
    ]  # fmt: skip
    assert sorted(out_b) == sorted(out_a)


def test_pending_entries_expire_after_the_horizon_in_event_time() -> None:
    f = Feed(ModelMonitor(MonitorConfig(join_horizon_ms=10_000)))
    f.p(pred("old", T0, "a"))
    f.l(Label("orphan", T0 + 1_000, "a"))
    assert f.m.pending == 2
    f.p(pred("new", T0 + 10_000, "a"))  # cutoff T0: nothing strictly older yet
    assert f.m.pending == 3 and f.m.counts["unlabelled_predictions"] == 0
    f.p(pred("newer", T0 + 10_001, "a"))  # "old" (T0) is now past the horizon
    assert f.m.counts["unlabelled_predictions"] == 1 and "old" not in f.m.predictions
    f.l(Label("late-ts", T0 + 11_002, "b"))  # clock T0+11002: the orphan label (T0+1000) expires
    assert f.m.counts["unmatched_labels"] == 1 and "orphan" not in f.m.labels
    # a label for an expired prediction waits (and expires) as unmatched, never joins
    f.l(Label("old", T0 + 11_003, "a"))
    assert f.m.counts["joined"] == 0 and "old" in f.m.labels
    assert f.m.counts["expired"] == 2
    assert totals(f)["model_predictions_unlabelled_total"] == 1.0


def test_max_pending_evicts_the_oldest() -> None:
    f = Feed(ModelMonitor(MonitorConfig(max_pending=2)))
    for i, ts in enumerate([T0 + 5, T0 + 1, T0 + 9]):
        f.p(pred(f"p{i}", ts, "a"))
    assert sorted(f.m.predictions) == ["p0", "p2"]  # p1 had the oldest event time
    assert f.m.counts["evicted"] == 1 and f.m.counts["unlabelled_predictions"] == 1


def test_exact_accuracy_and_rolling_accuracy() -> None:
    f = Feed(ModelMonitor(MonitorConfig(rolling_window=3, partition=4)))
    truth = ["a", "b", "a", "a", "b"]
    guess = ["a", "a", "a", "a", "a"]
    # rolling accuracy over the last 3 outcomes, by hand
    rolling = [1.0, 1 / 2, 2 / 3, 2 / 3, 2 / 3]
    got_rolling = []
    for i, (t, g) in enumerate(zip(truth, guess, strict=True)):
        f.p(pred(f"id{i}", T0 + i, g))
        out = f.l(Label(f"id{i}", T0 + 100 + i, t))
        got_rolling += [s for s in out if s.name == "model_accuracy_rolling"]
    assert [s.value for s in got_rolling] == pytest.approx(rolling, abs=1e-12)
    assert got_rolling[0].labels == {**M, "partition": "4"}
    got = totals(f)
    assert (got["model_correct_sum"], got["model_correct_count"]) == (3.0, 5.0)  # 0.6


def test_exact_absolute_error_and_rolling_mae() -> None:
    f = Feed(ModelMonitor(MonitorConfig(rolling_window=2)))
    yhat, y = [2.0, 3.5, 10.0], [2.5, 1.5, 10.0]
    for i in range(3):
        f.l(Label(f"r{i}", T0 + 50 + i, true_value=y[i]))  # labels first this time
    out: list[Sample] = []
    for i in range(3):
        out += f.p(pred(f"r{i}", T0 + i, value=yhat[i]))
    assert [v for _, v in by_name(out, "model_mae_rolling")] == [0.5, 1.25, 1.0]
    got = totals(f)
    assert (got["model_abs_error_sum"], got["model_abs_error_count"]) == (2.5, 3.0)
    assert "model_correct_count" not in got


def test_class_and_score_give_both_metrics_and_mismatched_shapes_are_counted() -> None:
    f = Feed(ModelMonitor())
    f.p(pred("s", T0, "1", 0.8))
    f.l(Label("s", T0 + 1, "1", 1.0))
    f.p(pred("c", T0, "1"))
    assert f.l(Label("c", T0 + 1, true_value=3.0)) == []
    assert f.m.counts["incomparable"] == 1
    got = totals(f)
    assert (got["model_correct_sum"], got["model_correct_count"]) == (1.0, 1.0)
    assert got["model_abs_error_sum"] == pytest.approx(0.2) and got["model_abs_error_count"] == 1


def test_replayed_offsets_are_skipped() -> None:
    m = ModelMonitor()
    assert m.apply_prediction(5, pred("a", T0, "x")) is not None
    assert m.apply_prediction(5, pred("a", T0, "x")) is None
    assert m.apply_prediction(4, pred("b", T0, "x")) is None
    assert m.apply_label(0, Label("a", T0, "x")) is not None  # own offsets per topic


def test_drift_heartbeat_once_per_interval_and_one_at_detection() -> None:
    f = Feed(ModelMonitor(MonitorConfig(drift_interval_ms=1_000)))
    rng = random.Random(3)
    drift: list[tuple[int, float]] = []
    for i in range(4_000):  # 4 predictions a second (250 ms apart); shift at 2,000
        x = rng.gauss(0.0 if i < 2_000 else 3.0, 1.0)
        out = f.p(pred(f"d{i}", T0 + i * 250, "a", features={"age": x}))
        drift += by_name(out, "model_feature_drift")
    zeros = [ts for ts, v in drift if v == 0.0]
    ones = [ts for ts, v in drift if v == 1.0]
    assert zeros[:3] == [T0, T0 + 1_000, T0 + 2_000]  # first prediction of each second
    assert len(zeros) == len({ts // 1_000 for ts in zeros})
    shift_ts = T0 + 2_000 * 250
    assert ones and all(ts >= shift_ts for ts in ones), "no alarm before the shift"
    assert ones[0] - shift_ts <= 100 * 250, "a 3-sigma shift is found within 100 values"


def test_checkpoint_round_trip_equals_an_uninterrupted_run() -> None:
    rng = random.Random(42)
    events: list[tuple[str, object]] = []
    for i in range(3_000):
        ts = T0 + i * 100
        shift = 2.0 if i > 1_500 else 0.0
        feats = {"f1": rng.gauss(shift, 1), "f2": rng.random()}
        if i % 3:
            events.append(
                ("p", pred(f"i{i}", ts, rng.choice("ab"), latency=rng.random() * 9, features=feats))
            )
        else:
            events.append(("p", pred(f"i{i}", ts, value=rng.gauss(0, 5), features=feats)))
        if rng.random() < 0.9:  # 10 % never labelled; labels a few positions later
            lab = Label(f"i{i}", ts + 5_000, rng.choice("ab"), rng.gauss(0, 5))
            events.insert(len(events) - rng.randint(0, 5), ("l", lab))
    config = MonitorConfig(join_horizon_ms=60_000, rolling_window=50, drift_interval_ms=2_000)

    def run(monitor: ModelMonitor, evs: list, offsets: dict[str, int]) -> list[Sample]:
        out: list[Sample] = []
        for kind, ev in evs:
            offsets[kind] += 1
            if kind == "p":
                res = monitor.apply_prediction(offsets[kind], ev)
            else:
                res = monitor.apply_label(offsets[kind], ev)
            assert res is not None
            out += res
        return out

    whole = ModelMonitor(config)
    expected = run(whole, events, {"p": -1, "l": -1})
    assert any(s.name == "model_feature_drift" and s.value == 1.0 for s in expected)
    assert whole.counts["unlabelled_predictions"] > 0
    assert any(s.name == "model_correct_sum" for s in expected)

    first = ModelMonitor(config)
    table: dict[bytes, bytes] = {}
    offsets = {"p": -1, "l": -1}
    got: list[Sample] = []
    cut = 2_100
    for start in range(0, cut, 300):  # checkpoints every 300 events
        got += run(first, events[start : min(start + 300, cut)], offsets)
        apply_records(table, first.checkpoint())
    run(first, events[cut : cut + 50], dict(offsets))  # applied, never checkpointed: lost
    second = ModelMonitor(config)
    second.restore(table)
    assert second.offsets == {"predictions": offsets["p"], "labels": offsets["l"]}
    got += run(second, events[cut:], offsets)
    assert got == expected
    assert dict(second.counts) == dict(whole.counts)
    assert second.predictions == whole.predictions and second.labels == whole.labels
    # the changelog after both runs holds the same records, byte for byte
    final_whole: dict[bytes, bytes] = {}
    apply_records(final_whole, whole.checkpoint())
    apply_records(table, second.checkpoint())
    assert table.keys() == final_whole.keys()
    assert table[META_KEY] == final_whole[META_KEY]
    assert table == final_whole


def test_records_validate_with_reasons() -> None:
    good = {"prediction_id": "a", "model": "m", "version": "1", "timestamp_ms": T0}
    with pytest.raises(InvalidModelEvent, match="missing-prediction"):
        prediction_from_record(good)
    with pytest.raises(InvalidModelEvent, match="reserved-label"):
        prediction_from_record({**good, "predicted_class": "x", "labels": {"feature": "f"}})
    with pytest.raises(InvalidModelEvent, match="bad-label-name"):
        prediction_from_record({**good, "predicted_class": "x", "labels": {"bad-name": "v"}})
    with pytest.raises(InvalidModelEvent, match="non-finite-value"):
        prediction_from_record({**good, "predicted_value": float("nan")})
    with pytest.raises(InvalidModelEvent, match="bad-prediction-id"):
        prediction_from_record({**good, "prediction_id": "", "predicted_class": "x"})
    with pytest.raises(InvalidModelEvent, match="missing-label"):
        label_from_record({"prediction_id": "a", "timestamp_ms": T0})
    with pytest.raises(ValueError, match="unknown drift detector 'nope'"):
        MonitorConfig(drift_detector="nope")
