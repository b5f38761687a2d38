"""Logs end to end on the real broker and embedded ClickHouse: LogShipper -> logs
topic -> worker (log agent) -> logs.stored / logs.templates / samples -> store ->
chDB, checked against the generated corpus' truth: stored rows, template ids and
counts, and the derived counters (also aggregated like any series)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable

import pytest
from fixtures.progress import committed

from monitoring.dev.deploy import BIN
from monitoring.dev.deploy import LocalDeployment as Pipeline
from monitoring.logs.corpus import Line, generate
from monitoring.runtime.topics import LOG_STORED, LOG_TEMPLATES, LOGS, SAMPLES
from monitoring.sdk.log_shipping import LogShipper

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STORED = [LOG_STORED, LOG_TEMPLATES, SAMPLES]  # what the store reads of the log agent's
LOG_ENV = {"LOGS__IDLE_TIMEOUT": "2s", "LOGS__CHECKPOINT_INTERVAL": "500ms"}
ROWS_SQL = (
    "SELECT service, toUnixTimestamp64Milli(timestamp), level, message, exception, "
    "attributes, template_id, host, logger, trace_id FROM logs FINAL"
)
COUNTERS_SQL = (
    "SELECT s.series, max(value) FROM samples FINAL INNER JOIN "
    "(SELECT series_id, series FROM series FINAL) AS s USING series_id "
    "WHERE s.series LIKE 'log\\_%' GROUP BY s.series"
)


def corpus(n: int, seed: int) -> list[Line]:
    now = int(time.time() * 1000)
    return generate(n, seed=seed, start_ms=now - now % 60_000 - 600_000, step_ms=20)


def ship(p: Pipeline, lines: list[Line]) -> None:
    """Ship ``lines`` through a LogShipper."""
    shipper = LogShipper(
        p.settings.kafka.bootstrap_servers, p.topic(LOGS), "unused", buffer_size=len(lines)
    )
    for ln in lines:
        r = ln.record
        shipper.submit(
            (
                r["timestamp_ms"],
                r["service"],
                r["host"],
                r["level"],
                r["logger"],
                r["message"],
                r["trace_id"],
                r["span_id"],
                r["exception"],
                r["attributes"],
            )
        )
    assert shipper.close(60) == 0
    assert shipper.dropped == 0 and shipper.delivered == len(lines)


def expected_counters(lines: list[Line], template_of: dict[tuple[str, int], int]) -> dict:  # type: ignore[type-arg]
    out: Counter[str] = Counter()
    for ln in lines:
        svc = ln.record["service"]
        out[f'log_events_total{{level="{ln.level}",service="{svc}"}}'] += 1
        tid = template_of[(svc, ln.template)]
        out[f'log_template_events_total{{service="{svc}",template_id="{tid}"}}'] += 1
    return {k: float(v) for k, v in out.items()}


def cli(p: Pipeline, *args: str) -> str:
    """``monitoring logs ARGS`` against the deployment's store; its stdout."""
    done = subprocess.run(
        [str(BIN), "logs", *args], env=p.env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def check(p: Pipeline, lines: list[Line]) -> None:
    n = len(lines)
    p.wait(
        lambda: p.query("SELECT count() FROM logs FINAL")[0][0] >= n,
        180,
        f"{n} stored logs\n{p.logs()}",
    )
    # every input committed by the worker and the store: anything extra is in by now
    p.wait(lambda: p.drained(worker=[LOGS], store=STORED), 120, f"drained\n{p.logs()}")
    rows = p.query(ROWS_SQL)
    assert len(rows) == n
    by_key = {(r[0], r[1]): r for r in rows}
    assert len(by_key) == n  # every (service, timestamp) once: nothing doubled
    ids: dict[tuple[str, int], set[int]] = defaultdict(set)
    for ln in lines:
        rec = ln.record
        row = by_key[(rec["service"], rec["timestamp_ms"])]
        assert row[2] == ln.level
        assert (row[3], row[4], row[5]) == (rec["message"], rec["exception"], rec["attributes"])
        assert (row[7], row[8], row[9]) == (rec["host"], rec["logger"], rec["trace_id"])
        ids[(rec["service"], ln.template)].add(row[6])
    # template ids: one per true template, distinct within a service
    assert len(ids) >= 50
    assert all(len(v) == 1 for v in ids.values()), {k: v for k, v in ids.items() if len(v) > 1}
    template_of = {k: next(iter(v)) for k, v in ids.items()}
    per_service: dict[str, list[int]] = defaultdict(list)
    for (svc, _), tid in template_of.items():
        per_service[svc].append(tid)
    assert all(len(set(v)) == len(v) for v in per_service.values())
    # templates table: one row per template, its text has the holes masked
    tpl = {
        (r[0], r[1]): r[2]
        for r in p.query("SELECT service, template_id, template FROM log_templates FINAL")
    }
    assert set(tpl) == {(svc, tid) for (svc, _), tid in template_of.items()}
    for key, text in tpl.items():
        assert text.startswith(key[0] + " ") and not any(ch.isdigit() for ch in text), text
    # counts per template in the table match the truth
    counted = {
        (r[0], r[1]): r[2]
        for r in p.query(
            "SELECT service, template_id, count() FROM logs FINAL GROUP BY service, template_id"
        )
    }
    truth = Counter(
        (ln.record["service"], template_of[(ln.record["service"], ln.template)]) for ln in lines
    )
    assert counted == dict(truth)
    # derived counters: the final cumulative values equal the truth, exactly
    expected = expected_counters(lines, template_of)

    def counters_done() -> bool:
        return dict(p.query(COUNTERS_SQL)) == expected

    p.wait(counters_done, 120, "log counters")
    # and the aggregation agent windows them like any series
    p.wait(
        lambda: (
            p.query("SELECT count() FROM aggregates FINAL WHERE name = 'log_events_total'")[0][0]
            > 0
        ),
        120,
        "aggregates of log_events_total",
    )


def test_corpus_end_to_end(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(**LOG_ENV)
    lines = corpus(3_000, seed=21)
    assert len({(ln.record["service"], ln.template) for ln in lines}) >= 50
    assert sum(1 for ln in lines if "\n" in ln.record["exception"]) > 20
    p.start_store()
    p.start("worker", "worker")
    ship(p, lines)
    check(p, lines)
    # the CLI answers through the running store's query endpoint
    charged = [ln for ln in lines if ln.record["service"] == "billing" and ln.template == 32]
    assert charged and "failed to charge invoice" in charged[0].record["message"]
    out = cli(p, "search", "failed charge invoice", "--service", "billing", "--since", "1h",
              "--level", "error", "--limit", "1000", "--format", "json")  # fmt: skip
    got = [json.loads(line) for line in out.splitlines()]
    assert [g["ts_ms"] for g in got] == sorted(
        (ln.record["timestamp_ms"] for ln in charged), reverse=True
    )
    top = json.loads(cli(p, "top", "--since", "1h", "--limit", "3", "--format", "json"))
    truth = Counter((ln.record["service"], ln.template) for ln in lines).most_common(3)
    assert [t["count"] for t in top] == [n for _, n in truth]


def test_log_agent_restart_mid_stream(pipeline_factory: Callable[..., Pipeline]) -> None:
    p = pipeline_factory(**LOG_ENV)
    lines = corpus(3_000, seed=22)
    p.start_store()
    p.start("worker", "worker-a")
    half = len(lines) // 2
    ship(p, lines[:half])
    p.wait(
        lambda: p.query("SELECT count() FROM logs FINAL")[0][0] >= 700,
        120,
        f"first stored logs\n{p.logs()}",
    )
    # past a checkpoint of the log agent (its offsets commit after it): stored logs only
    # say the outputs were flushed, which comes first
    group, bootstrap = f"{p.prefix}worker", p.settings.kafka.bootstrap_servers
    p.wait(lambda: committed(bootstrap, group, p.topic(LOGS)) > 0, 60, "a log checkpoint")
    # SIGKILL mid-stream (the second half is shipped while no worker runs, and while the
    # new one starts): worker-b replays from worker-a's last checkpoint
    p.kill("worker-a")
    shipping = threading.Thread(target=ship, args=(p, lines[half:]))
    shipping.start()
    p.start("worker", "worker-b")
    shipping.join(120)
    assert not shipping.is_alive()
    check(p, lines)
    restored = [
        re.findall(r'"services": (\d+)', line)[0]
        for line in (p.dir / "worker-b.log").read_text().splitlines()
        if "logs_partition_restored" in line
    ]
    assert any(int(n) > 0 for n in restored), "worker-b restored no drain3 state"
