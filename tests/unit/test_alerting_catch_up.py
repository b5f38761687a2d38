"""The alert evaluator's start-up and its guard against windows from the future, in
process: ``AlertingAgent.handle`` / ``evaluate_due`` as its loop calls them, with
encoded aggregates and close marks as the worker writes them, and the sends captured.

* Restart with a 60-end backlog over 6 partitions, read in the worst orders (one
  partition's whole backlog first, or in chunks): every end is evaluated once, with
  every series (no false resolve, ``count`` and ``absent`` see them all).
* A window a partition closed an hour ahead is not evaluated and does not move the
  evaluator's position: every real end after it is still evaluated.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from fixtures.agents import Sent
from prometheus_client import CollectorRegistry

from monitoring.agents.alerting import AlertingAgent
from monitoring.config import Settings
from monitoring.metrics.aggregator import Aggregate
from monitoring.metrics.samples import series_key
from monitoring.wire.aggregate_encoding import CLOSED_THROUGH, AggregateEncoder
from monitoring.wire.codec import AvroCodec

W = 10_000
PARTITIONS = 6
N_SERIES = 120
CODEC = AvroCodec.from_directory()
RULES = f"""
groups:
  - name: g
    rules:
      - alert: Warm
        expr: temp > 0
      - alert: Missing
        expr: count(temp) < {N_SERIES}
      - alert: Gone
        expr: absent(temp{{room="r{N_SERIES - 1}"}})
"""


def alerts(sent: Sent) -> list[tuple[str, str]]:
    """(alertname, status) of each alert sent."""
    recs = [CODEC.decode(v).record for v in sent.values("alerts")]
    return [(r["labels"]["alertname"], r["status"].lower()) for r in recs]


def agent(tmp_path: Path) -> tuple[AlertingAgent, Sent, list[int]]:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    # these tests count state changes: no Watchdog, no re-sends within the backlog
    alerting = {"rules": [str(rules)], "watchdog": False, "resend_interval": "1h"}
    a = AlertingAgent(
        Settings(alerting=alerting),  # type: ignore[arg-type]
        CollectorRegistry(),
    )
    sent = Sent()
    a.outputs = sent  # type: ignore[assignment]
    evaluated: list[int] = []
    evaluate = a.engine.evaluate

    def recording(at_ms: int) -> Any:
        evaluated.append(at_ms)
        return evaluate(at_ms)

    a.engine.evaluate = recording  # type: ignore[method-assign]
    return a, sent, evaluated


def closes(first_end: int, ends: range) -> dict[int, list[tuple[bytes, Any]]]:
    """Per partition, its messages in offset order: one close per end (series of the
    partition, the mark on the last record), as the worker publishes them."""
    enc = AggregateEncoder(CODEC)
    out: dict[int, list[tuple[bytes, Any]]] = {p: [] for p in range(PARTITIONS)}
    for w in ends:
        end = first_end + w * W
        for p in range(PARTITIONS):
            aggs = [
                Aggregate(series_key("temp", {"room": f"r{i}"}), "temp", {"room": f"r{i}"},
                          W, end - W, end, 1, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0, 20.0)
                for i in range(p, N_SERIES, PARTITIONS)
            ]  # fmt: skip
            values = enc.encode_all(aggs)
            for j, v in enumerate(values):
                mark = [(CLOSED_THROUGH, str(end).encode())] if j == len(values) - 1 else None
                out[p].append((v, mark))
    return out


def recent_end(n_ends: int) -> int:
    now = int(time.time() * 1000)
    return now - now % W - (n_ends + 2) * W


def feed(a: AlertingAgent, batches: list[list[tuple[int, int, bytes, Any]]]) -> None:
    """Each batch as one ``consume`` of the agent's loop, then its due ends."""
    import asyncio

    async def go() -> None:
        for batch in batches:
            for p, offset, value, headers in batch:
                a.handle(p, value, headers, offset)
            await a.evaluate_due(int(time.time() * 1000))

    asyncio.run(go())


def in_order(msgs: dict[int, list[tuple[bytes, Any]]]) -> list[tuple[int, int, bytes, Any]]:
    """Live: every partition's close of one end before the next end's."""
    per_end = len(msgs[0]) // (len(msgs[0]) // (N_SERIES // PARTITIONS))
    out = []
    for i in range(0, len(msgs[0]), per_end):
        for p in range(PARTITIONS):
            out += [(p, i + j, v, h) for j, (v, h) in enumerate(msgs[p][i : i + per_end])]
    return out


def backlog_batches(
    msgs: dict[int, list[tuple[bytes, Any]]], order: str, size: int
) -> list[list[tuple[int, int, bytes, Any]]]:
    rng = random.Random(order)
    if order == "one partition after another":
        flat = [(p, o, v, h) for p in sorted(msgs) for o, (v, h) in enumerate(msgs[p])]
    elif order == "last partition first":
        flat = [
            (p, o, v, h) for p in sorted(msgs, reverse=True) for o, (v, h) in enumerate(msgs[p])
        ]
    else:  # fetch-sized chunks of random partitions, each partition in offset order
        pos = dict.fromkeys(msgs, 0)
        flat = []
        while any(pos[p] < len(msgs[p]) for p in pos):
            p = rng.choice([p for p in pos if pos[p] < len(msgs[p])])
            n = rng.randint(1, 400)
            flat += [(p, o, *msgs[p][o]) for o in range(pos[p], min(pos[p] + n, len(msgs[p])))]
            pos[p] += n
    return [flat[i : i + size] for i in range(0, len(flat), size)]


@pytest.mark.parametrize(
    "order", ["one partition after another", "last partition first", "random chunks"]
)
@pytest.mark.parametrize("consume_size", [500, 5000])
def test_a_restart_with_a_backlog_evaluates_every_end_with_every_series(
    tmp_path: Path, order: str, consume_size: int
) -> None:
    first = recent_end(70)
    before, sent, evaluated = agent(tmp_path)
    before.begin_catch_up({}, {})
    feed(before, [in_order(closes(first, range(10)))])
    assert sorted(alerts(sent)) == [("Warm", "firing")] * N_SERIES
    assert evaluated == [first + w * W for w in range(10)]
    state, position = before.engine.to_bytes(), before.clock.last_evaluated_ms

    # restart: state restored; the history re-read from the start of the topic, 60 ends
    # after the checkpoint
    after, sent, evaluated = agent(tmp_path)
    after.engine.restore(state)
    after.clock.last_evaluated_ms = position
    msgs = closes(first, range(70))
    after.begin_catch_up(dict.fromkeys(range(PARTITIONS), 0), {p: len(m) for p, m in msgs.items()})
    feed(after, backlog_batches(msgs, order, consume_size))
    assert after.clock.catching_up == frozenset()
    assert evaluated == [first + w * W for w in range(10, 70)]
    assert alerts(sent) == []  # no false resolve, nothing missing, nothing absent


def test_partitions_without_backlog_do_not_hold_the_catch_up(tmp_path: Path) -> None:
    import asyncio

    first = recent_end(20)
    a, _, evaluated = agent(tmp_path)
    msgs = closes(first, range(20))
    # partition 5 starts at its end (nothing to re-read): it counts as live from the
    # start, so it holds ends by the grace only, not until it delivers
    a.begin_catch_up({**dict.fromkeys(range(5), 0), 5: -1}, {p: len(m) for p, m in msgs.items()})
    assert a.clock.catching_up == frozenset(range(5))
    assert a.health()["catching_up"] == [0, 1, 2, 3, 4]
    del msgs[5]
    feed(a, backlog_batches(msgs, "one partition after another", 500))
    assert a.clock.catching_up == frozenset()
    grace = a.clock.grace_ms
    asyncio.run(a.evaluate_due(int(time.time() * 1000) + grace))
    assert evaluated == [first + w * W for w in range(20)]


def test_a_window_from_the_future_is_not_evaluated_and_skips_nothing(tmp_path: Path) -> None:
    first = recent_end(30)
    a, sent, evaluated = agent(tmp_path)
    a.begin_catch_up({}, {})
    live = in_order(closes(first, range(30)))
    # partition 2 closed a window an hour ahead (its watermark went there), with its mark
    future = first + 29 * W + 3_600_000
    (ahead,) = [(2, 10**6, v, h) for v, h in closes(future, range(1))[2][-1:]]
    half = len(live) // 3
    feed(a, [live[:half], [ahead], live[half:]])
    assert evaluated == [first + w * W for w in range(30)]
    assert a.clock.last_evaluated_ms == first + 29 * W
    assert alerts(sent).count(("Warm", "firing")) == N_SERIES
    assert ("Missing", "firing") not in alerts(sent)
    invalid = a.metrics.invalid.labels("window-in-future")._value.get()
    assert invalid == 1


def test_a_checkpointed_position_in_the_future_is_pulled_back(tmp_path: Path) -> None:
    a, _, _ = agent(tmp_path)
    now = int(time.time() * 1000)
    assert a._sane_position(now - 5 * W) == now - 5 * W
    assert now - W <= a._sane_position(now + 3_600_000) <= now


def test_a_window_end_off_the_window_grid_is_not_evaluated(tmp_path: Path) -> None:
    """The worker's windows end on multiples of their size; an aggregate that ends
    elsewhere (garbage, another writer) made an evaluation of its own (ALERTS samples at
    that time, one more per distinct end)."""
    first = recent_end(10)
    a, _, evaluated = agent(tmp_path)
    a.begin_catch_up({}, {})
    live = in_order(closes(first, range(10)))
    enc = AggregateEncoder(CODEC)
    odd = [
        (p, 10**6 + k, enc.encode(Aggregate(
            series_key("temp", {"room": "x"}), "temp", {"room": "x"},
            W, first + 7 * W + k * 97 - W, first + 7 * W + k * 97 + 1, 1, *[1.0] * 8)), None)
        for k, p in enumerate(range(PARTITIONS))
    ]  # fmt: skip
    half = len(live) // 2
    feed(a, [live[:half], odd, live[half:]])
    assert evaluated == [first + w * W for w in range(10)]
    assert a.metrics.invalid.labels("window-off-grid")._value.get() == PARTITIONS


def test_its_own_series_do_not_move_the_evaluation_on(tmp_path: Path) -> None:
    """ALERTS written at an end ``T`` are in the window ending ``T + W``, which the worker
    closes idle once no other data comes (marking its close through ``T + W``): that end
    was evaluated, wrote ALERTS for the next, and so on, a window per idle timeout with no
    data. The windows go into the history; their ends wait for a later end of data."""
    first = recent_end(10)
    a, sent, evaluated = agent(tmp_path)
    a.begin_catch_up({}, {})
    feed(a, [in_order(closes(first, range(3)))])
    assert evaluated == [first, first + W, first + 2 * W]
    enc = AggregateEncoder(CODEC)
    mine = []
    for k, end in enumerate(first + w * W for w in range(3, 6)):
        for p in range(PARTITIONS):
            labels = {"alertname": "Warm", "alertstate": "firing", "room": f"r{p}"}
            agg = Aggregate(series_key("ALERTS", labels), "ALERTS", labels, W, end - W, end,
                            1, *[1.0] * 8)  # fmt: skip
            mark = [(CLOSED_THROUGH, str(end).encode())]
            mine.append((p, 10**6 + k, enc.encode(agg), mark))
    feed(a, [mine])
    assert evaluated == [first, first + W, first + 2 * W]
    assert ("Gone", "firing") not in alerts(sent)
    assert sorted(a._ahead) == [first + 4 * W, first + 5 * W]  # kept for their ends
    # data again (a backlog): the ends only the own series reached are evaluated first
    feed(a, [[(p, 2 * 10**6 + i, v, h) for p, i, v, h in in_order(closes(first, range(6, 7)))]])
    assert evaluated == [first + w * W for w in range(7)]
    assert not a._ahead and not a._own_ends
