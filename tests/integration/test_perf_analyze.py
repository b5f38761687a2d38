"""`monitoring perf analyze|suggest` and the Python API on a chDB store whose right
answers are known (tests/fixtures/perf_store.py): the store's real query server behind
its guard, and the in-process server when none runs."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
from fixtures.perf_store import HOUR_S, PerfStore, build_perf_store
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from monitoring.api.guard import Guard
from monitoring.cli import app
from monitoring.perf import store_io
from monitoring.query import clickhouse_http, prometheus_api
from monitoring.query.client import StoreClient
from monitoring.sinks.clickhouse.connection import connect_read_only
from monitoring.sinks.clickhouse.query_server import QueryServer

pytestmark = pytest.mark.no_broker
TOKEN = "perf-t0ken-1717"
NOW_S = float(int(time.time()) // HOUR_S * HOUR_S)
LATENCY = ["mean_latency_s", "p50_latency_s", "p90_latency_s", "p99_latency_s"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PerfStore, str]]:
    perf = build_perf_store(tmp_path_factory.mktemp("perf"), NOW_S)
    reader = connect_read_only(perf.settings.storage.dsn, perf.settings.storage.query)
    server = QueryServer(
        reader, CollectorRegistry(), "127.0.0.1", 0, limits=perf.settings.storage.query,
        guard=Guard.for_bind("127.0.0.1", token=TOKEN),
        protocols=[clickhouse_http.routes, prometheus_api.routes],
    ).start()  # fmt: skip
    try:
        yield perf, "http://{}:{}".format(*server.address)
    finally:
        server.stop()
        reader.close()


def run(store: tuple[PerfStore, str], *args: str) -> tuple[int, str]:
    env = {"MONITORING_API__TOKEN": TOKEN, "MONITORING_STORAGE__DSN": store[0].settings.storage.dsn}
    until = [] if "--until" in args else ["--until", str(NOW_S)]
    result = CliRunner().invoke(app, ["perf", *args, "--url", store[1], *until], env=env)
    return result.exit_code, result.output


def test_analyze_flags_the_latency_regression_and_the_saturated_cpu(
    store: tuple[PerfStore, str],
) -> None:
    code, out = run(store, "analyze", "--service", "shop", "--since", "1h", "--baseline", "6h")
    assert code == 0, out
    assert "regressions: mean_latency_s, p50_latency_s, p90_latency_s, p99_latency_s" in out
    assert "saturation process_cpu_cores_max" in out and "SATURATED" in out
    code, out = run(
        store, "analyze", "--service", "shop", "--since", "1h", "--baseline", "6h", "--json",
        "--fail-on-regression",
    )  # fmt: skip
    assert code == 1  # a regression fails the command when asked to
    doc = json.loads(out)
    assert doc["regressions"] == LATENCY
    cmp = doc["comparisons"]
    # throughput and errors did not change significantly (same rates, same error ratio)
    assert not cmp["throughput_rps"]["regression"] and not cmp["error_ratio"]["regression"]
    assert cmp["p50_latency_s"]["relative_change"] > 0.3
    assert cmp["p50_latency_s"]["rank_biserial"] > 0.8 and cmp["p50_latency_s"]["p_value"] < 0.01
    assert cmp["p50_latency_s"]["n_current"] == 12 and cmp["p50_latency_s"]["n_baseline"] == 72
    cur, base = doc["current"], doc["baseline"]
    # 32 req/s on average; the /checkout route fails 5 % of its 2/s: ~0.3 % overall
    assert 25 < cur["rate_rps"] < 45 and 25 < base["rate_rps"] < 45
    assert 0.001 < base["error_ratio"] < 0.006
    assert cur["p50_s"] > base["p50_s"]
    sat = {s["resource"]: s for s in doc["saturation"]}
    assert sat["process_cpu_cores_max"]["saturated"]
    assert not sat["process_rss_bytes"]["saturated"]


def test_a_period_against_an_equal_one_flags_nothing(store: tuple[PerfStore, str]) -> None:
    # two baseline hours against the three before them: same load, same latencies
    code, out = run(
        store, "analyze", "--service", "shop", "--since", "2h", "--baseline", "3h", "--until",
        str(NOW_S - 2 * HOUR_S), "--fail-on-regression",
    )  # fmt: skip
    assert code == 0, out
    assert "regressions: none" in out


def test_model_version_against_version(store: tuple[PerfStore, str]) -> None:
    code, out = run(
        store, "analyze", "--model", "fraud", "--version", "v2", "--against", "v1", "--since", "1h"
    )
    assert code == 0, out
    assert "v2: 1500 predictions" in out and "regressions: latency" in out
    code, out = run(
        store, "analyze", "--model", "fraud", "--version", "v1", "--against", "v0", "--since",
        "1h", "--json",
    )  # fmt: skip
    doc = json.loads(out)
    assert doc["latency"]["regression"] is False and doc["n_current"] == 1500
    assert abs(doc["latency"]["relative_change"]) < 0.1


def test_suggest_names_the_hot_route_the_error_hotspot_and_the_saturation(
    store: tuple[PerfStore, str],
) -> None:
    code, out = run(store, "suggest", "--service", "shop", "--since", "1h", "--json")
    assert code == 0, out
    found = json.loads(out)
    kinds = [(s["kind"], s["subject"]) for s in found]
    assert ("saturation", "process_cpu_cores_max") in kinds
    assert ("hot-route", "GET /search") in kinds
    assert ("error-hotspot", "POST /checkout") in kinds
    assert ("hot-model", "fraud v2") in kinds
    assert not any(k == "hot-route" and s != "GET /search" for k, s in kinds)
    assert not any(k in ("over-capacity",) for k, _ in kinds)
    hot = next(s for s in found if s["kind"] == "hot-route")
    assert hot["evidence"]["share"] > 0.8
    err = next(s for s in found if s["kind"] == "error-hotspot")
    assert 0.03 < err["evidence"]["error_ratio"] < 0.07 and err["evidence"]["share_of_errors"] == 1
    code, out = run(store, "suggest", "--service", "shop", "--since", "1h")
    assert code == 0 and "[hot-route] GET /search takes" in out and "evidence: share=" in out


def test_python_api_and_hostile_labels(store: tuple[PerfStore, str]) -> None:
    with StoreClient(store[1], TOKEN) as client:
        a = store_io.analyze_service(
            client, "shop", since_s=HOUR_S, baseline_s=6 * HOUR_S, until_s=NOW_S
        )
        assert a.regressions == LATENCY
        # a label value with quotes and braces is a quoted string, not PromQL
        odd = store_io.analyze_service(
            client, 'shop"} or up{x="', since_s=HOUR_S, baseline_s=HOUR_S, until_s=NOW_S
        )
        assert odd.current.requests != odd.current.requests or odd.current.requests == 0
        assert odd.regressions == []
        with pytest.raises(store_io.BadQuery, match="printable"):
            store_io.analyze_service(client, "a\nb", until_s=NOW_S)
        with pytest.raises(store_io.BadQuery, match="windows"):
            store_io.analyze_service(client, "shop", since_s=400 * 86_400, window_s=60)


def test_without_a_running_store_the_chdb_directory_answers(
    store: tuple[PerfStore, str],
) -> None:
    # the module's query server holds the directory read-only; the in-process server of
    # open_store opens it read-only too. No --url: nothing answers on the store's port
    # (a store named by --url that does not answer is an error, never this fallback)
    env = {"MONITORING_STORAGE__DSN": store[0].settings.storage.dsn,
           "MONITORING_STORAGE__QUERY_PORT": "1"}  # fmt: skip
    result = CliRunner().invoke(
        app,
        ["perf", "analyze", "--service", "shop", "--since", "1h", "--baseline", "6h",
         "--until", str(NOW_S)],
        env=env,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "regressions: mean_latency_s" in result.output
    named = CliRunner().invoke(
        app,
        ["perf", "analyze", "--service", "shop", "--url", "http://127.0.0.1:1",
         "--until", str(NOW_S)],
        env=env,
    )  # fmt: skip
    assert named.exit_code == 1 and "no store answers at http://127.0.0.1:1" in named.output


def test_bad_arguments_are_explained(store: tuple[PerfStore, str]) -> None:
    code, out = run(store, "analyze", "--since", "1h")
    assert code == 2 and "--service or --model" in out
    code, out = run(store, "analyze", "--model", "m", "--since", "1h")
    assert code == 2 and "--version and --against" in out
    code, out = run(store, "analyze", "--service", "s", "--alpha", "2")
    assert code == 2
    code, out = run(store, "analyze", "--service", "s", "--since", "soon")
    assert code == 2 and "duration" in out


def test_report_section_renders_with_the_shipped_template(store: tuple[PerfStore, str]) -> None:
    from monitoring.reports.generator import ReportData, ReportGenerator
    from monitoring.reports.sections import Period, Sections

    with StoreClient(store[1], TOKEN) as client:  # as `monitoring report --sections` asks
        (section,) = Sections(client, Period(NOW_S - HOUR_S, NOW_S)).all(["performance"])
    assert not section.error and section.title == "Performance"
    kinds = {(r[0], r[1]) for r in section.rows}
    assert {("shop", "hot-route"), ("shop", "error-hotspot"), ("shop", "saturation")} <= kinds
    assert ("shop", "hot-model") in kinds  # models once, with the first service
    (block,) = section.blocks
    assert block.rows[0][0] == "GET /search" and block.rows[0][4].endswith("%")
    assert section.summary.startswith(f"{len(section.rows)} suggestion(s) for 1 service(s)")
    data = ReportData("perf", Period(NOW_S - HOUR_S, NOW_S), [section])
    html = ReportGenerator().generate(data, "default", "html").html
    assert "GET /search takes" in html and "shop: routes by share of server time" in html


def test_recorded_benchmark_runs_side_by_side(store: tuple[PerfStore, str]) -> None:
    code, out = run(store, "runs", "--since", "1h", "--json")
    assert code == 0, out
    runs = {r["run_id"]: r for r in json.loads(out)}
    assert set(runs) == {"run-1", "run-2"}
    one, two = runs["run-1"], runs["run-2"]
    assert (one["target_rate"], two["target_rate"]) == (40, 80)
    assert (one["requests"], two["requests"]) == (20, 40)  # rate x 0.5 s
    assert one["errors"] == 0 and one["target"] == "scorer:predict"
    assert set(one["quantiles"]) == {"0.5", "0.9", "0.99", "0.999"}
    assert 0 < one["quantiles"]["0.5"] <= one["quantiles"]["0.999"]
    code, out = run(store, "runs", "--since", "1h")
    assert code == 0 and "run-1" in out and "run-2" in out and "2 run(s)" in out
    code, out = run(store, "runs", "--since", "1h", "--target", "other")
    assert code == 0 and "0 run(s)" in out
