"""`monitoring perf bench|runs|analyze|suggest`: benchmarking, analysis, advice.

``bench`` drives a URL or ``module:callable`` open-loop at ``--rate`` for ``--duration``
(``monitoring/perf/benchmarking.py``), prints the summary and records the run's series
through the SDK (labelled ``run_id``) unless ``--no-record``; ``runs`` lists recorded runs
side by side. ``analyze`` and ``suggest`` read the store (``monitoring/perf/store_io.py``).
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from monitoring.cli.settings import load_settings
from monitoring.cli.store import ConfigOpt

app = typer.Typer(help="Performance: open-loop benchmarks, analysis against a baseline, advice.")
err = Console(stderr=True)
MAX_DURATION_S = 86_400.0
MAX_UNTIL_S = 32_503_680_000.0  # 3000-01-01


def seconds_of(text: str, name: str, max_s: float = 400 * 86_400) -> float:
    """Seconds of a Prometheus duration (``30s``, ``24h``, ``7d``) or a number of seconds."""
    from monitoring.query.prom_format import BadParam, parse_duration

    try:
        ms = parse_duration(text, name)
    except BadParam as e:
        raise typer.BadParameter(str(e).split(": ", 1)[-1], param_hint=f"--{name}") from None
    if ms <= 0 or ms / 1000 > max_s:
        raise typer.BadParameter(f"must be between 1ms and {max_s:g}s", param_hint=f"--{name}")
    return ms / 1000


MAX_BODY = 10 << 20
MAX_HEADERS = 50


def _headers(items: list[str]) -> dict[str, str]:
    """``Name: value`` pairs, checked (token names, printable values)."""
    if len(items) > MAX_HEADERS:
        raise typer.BadParameter(f"at most {MAX_HEADERS}", param_hint="--header")
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition(":")
        name, value = name.strip(), value.strip()
        ok = sep and name and len(name) <= 100 and len(value) <= 8192
        if not ok or not all(c.isalnum() or c in "-_" for c in name) or not value.isprintable():
            raise typer.BadParameter(f"not 'Name: value': {item[:80]!r}", param_hint="--header")
        out[name] = value
    return out


def _body(path: Path | None) -> bytes | None:
    """The request body: at most ``MAX_BODY`` bytes read, whatever the file claims (a
    device or a pipe has no size: ``/dev/zero`` was read until memory ran out)."""
    if path is None:
        return None
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BODY + 1)
    except OSError as e:
        raise typer.BadParameter(str(e), param_hint="--body-file") from None
    if len(data) > MAX_BODY:
        raise typer.BadParameter(f"larger than {MAX_BODY} bytes", param_hint="--body-file")
    return data


@app.command("bench")
def bench(
    target: Annotated[str, typer.Argument(help="http(s)://URL or module:callable.")],
    rate: Annotated[float, typer.Option(help="Intended requests per second.")],
    duration: Annotated[str, typer.Option(help="How long to send: 30s, 5m...")] = "30s",
    concurrency: Annotated[int, typer.Option(help="Requests in flight at most.")] = 64,
    arrivals: Annotated[str, typer.Option(help="constant (wrk2) or poisson.")] = "constant",
    timeout: Annotated[str, typer.Option(help="Per-request timeout.")] = "10s",
    method: Annotated[str, typer.Option(help="HTTP method for a URL.")] = "GET",
    header: Annotated[
        list[str] | None, typer.Option(help="'Name: value' for a URL (repeatable).")
    ] = None,
    body_file: Annotated[
        Path | None, typer.Option(help="Request body for a URL (at most 10 MB).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the poisson schedule.")] = None,
    run_id: Annotated[str, typer.Option(help="Label of this run (default: time-xxxx).")] = "",
    record: Annotated[bool, typer.Option(help="Send the run's series to Kafka.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Drive TARGET open-loop at --rate for --duration; print the latency summary."""
    from monitoring.perf.benchmarking import (
        BadTarget,
        BenchRecorder,
        http_target,
        new_run_id,
        resolve_target,
        run_bench,
    )
    from monitoring.sdk.producer import MetricsCollector

    if arrivals not in ("constant", "poisson"):
        raise typer.BadParameter("constant or poisson", param_hint="--arrivals")
    if not (math.isfinite(rate) and rate > 0):
        raise typer.BadParameter("a positive number of requests per second", param_hint="--rate")
    if not 1 <= concurrency <= 10_000:
        raise typer.BadParameter("1 to 10000", param_hint="--concurrency")
    if len(run_id) > 100 or any(not (c.isalnum() or c in "-_.:") for c in run_id):
        raise typer.BadParameter("up to 100 of A-Z a-z 0-9 - _ . :", param_hint="--run-id")
    if not (1 <= len(method) <= 20 and method.isascii() and method.isalpha()):
        raise typer.BadParameter("an HTTP method: up to 20 letters", param_hint="--method")
    dur = seconds_of(duration, "duration", MAX_DURATION_S)
    tmo = seconds_of(timeout, "timeout", 3600)
    headers = _headers(header or [])
    body = _body(body_file)
    try:
        if "://" in target:
            tgt = http_target(target, method.upper(), body, headers)
        elif headers or body is not None:
            raise BadTarget("--header and --body-file are for a URL")
        else:
            tgt = resolve_target(target)
    except BadTarget as e:
        raise typer.BadParameter(str(e), param_hint="TARGET") from None
    rid = run_id or new_run_id()
    mc = None
    if record:
        mc = MetricsCollector(load_settings(config), source="perf-bench")
    try:
        run = asyncio.run(
            run_bench(
                tgt,
                rate,
                dur,
                concurrency=concurrency,
                arrivals=arrivals,  # type: ignore[arg-type]
                timeout_s=tmo,
                seed=seed,
                recorder=BenchRecorder(mc, rid, tgt.label) if mc is not None else None,
                run_id=rid,
            )
        )
    except ValueError as e:
        err.print(f"[red]bench failed:[/] {e}")
        raise typer.Exit(2) from None
    finally:
        left = mc.close() if mc is not None else 0
    s = run.summary
    typer.echo(f"run {rid} target {tgt.label} arrivals={arrivals} concurrency={concurrency}")
    for line in s.lines():
        typer.echo(line)
    if mc is not None:
        note = f" ({left} samples undelivered)" if left else ""
        typer.echo(f"series: run_id={rid} on {mc.topic}{note}")
    q = {f"p{k * 100:g}_ms": f"{v * 1000:.3f}" for k, v in s.latency.items()}
    typer.echo(
        f"run_id={rid} achieved_rate={s.achieved_rate:.2f} errors={s.errors} "
        + " ".join(f"{k}={v}" for k, v in q.items())
    )


def _period_bounds(since: str, until: float | None) -> tuple[float, float, float]:
    import time

    span = seconds_of(since, "since")
    end = time.time() if until is None else until
    if not math.isfinite(end) or not 0 < end <= MAX_UNTIL_S:
        # beyond it, times overflow the int64 milliseconds of the queries and time_t
        raise typer.BadParameter(
            f"Unix seconds, after 1970 and at most {MAX_UNTIL_S:.0f} (year 3000)",
            param_hint="--until",
        )
    return end - span, end, span


def _fmt(name: str, v: float) -> str:
    if not math.isfinite(v):
        return "-"
    if name.endswith("_s"):
        return f"{v * 1000:.2f}ms"
    if name == "error_ratio":
        return f"{v:.3%}"
    return f"{v:.3f}"


def _iso(t: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _jsonable(obj: object) -> object:
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for prop in ("regressions", "saturated", "rate_rps", "error_ratio", "mean_s"):
            if hasattr(type(obj), prop) and isinstance(getattr(type(obj), prop), property):
                out[prop] = _jsonable(getattr(obj, prop))
        return out
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return None  # per-window arrays stay out of the report
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.generic):
        return _jsonable(obj.item())
    return obj


@app.command("analyze")
def analyze(
    service: Annotated[str | None, typer.Option(help="The service label to analyze.")] = None,
    model: Annotated[str | None, typer.Option(help="A model (model_latency_ms).")] = None,
    version: Annotated[str | None, typer.Option(help="The model version to judge.")] = None,
    against: Annotated[str | None, typer.Option(help="The model version to compare with.")] = None,
    since: Annotated[str, typer.Option(help="Current period, up to --until.")] = "24h",
    baseline: Annotated[str, typer.Option(help="Baseline period, just before it.")] = "7d",
    window: Annotated[str, typer.Option(help="Window of the per-window values.")] = "5m",
    until: Annotated[float | None, typer.Option(help="End, Unix seconds (default now).")] = None,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.01,
    min_change: Annotated[float, typer.Option(help="Smallest relative change flagged.")] = 0.1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    fail_on_regression: Annotated[bool, typer.Option(help="Exit 1 on a regression.")] = False,
    url: Annotated[str | None, typer.Option(help="Store URL (default from settings).")] = None,
    config: ConfigOpt = None,
) -> None:
    """A service's latency, throughput and errors against a baseline period (or a
    model version against another), flagging only significant regressions."""
    import json

    from monitoring.perf import analysis, store_io
    from monitoring.query.client import StoreError, open_store

    if (service is None) == (model is None):
        raise typer.BadParameter("give --service or --model (with --version, --against)")
    if model is not None and (not version or not against):
        raise typer.BadParameter("--model needs --version and --against")
    if not 0 < alpha < 1:
        raise typer.BadParameter("between 0 and 1", param_hint="--alpha")
    if not (math.isfinite(min_change) and min_change >= 0):
        raise typer.BadParameter("0 or more (0.1 is 10 %)", param_hint="--min-change")
    start, end, _span = _period_bounds(since, until)
    settings = load_settings(config)
    try:
        with open_store(settings, url, fallback=url is None) as client:
            if model is not None:
                assert version is not None and against is not None
                result: object = store_io.analyze_model_versions(
                    client, model, version, against, since_s=end - start, until_s=end,
                    alpha=alpha, min_change=min_change,
                )  # fmt: skip
            else:
                assert service is not None
                result = store_io.analyze_service(
                    client, service, since_s=end - start, until_s=end,
                    baseline_s=seconds_of(baseline, "baseline"),
                    window_s=seconds_of(window, "window"), alpha=alpha, min_change=min_change,
                )  # fmt: skip
    except (StoreError, store_io.BadQuery) as e:
        err.print(f"[red]analysis failed:[/] {e}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_jsonable(result), indent=2))
    elif isinstance(result, analysis.ModelAnalysis):
        _print_model(result)
    else:
        assert isinstance(result, analysis.Analysis)
        _print_service(result)
    flagged = (
        result.latency.regression
        if isinstance(result, analysis.ModelAnalysis)
        else bool(result.regressions)  # type: ignore[attr-defined]
    )
    if fail_on_regression and flagged:
        raise typer.Exit(1)


def _print_service(a: object) -> None:
    from monitoring.perf.analysis import Analysis

    assert isinstance(a, Analysis)
    c, b = a.current, a.baseline
    typer.echo(
        f"service {a.subject}: {_iso(c.start_s)} .. {_iso(c.end_s)} against "
        f"{_iso(b.start_s)} .. {_iso(b.end_s)}"
    )
    typer.echo(
        f"totals      current: {c.requests:.0f} requests, {c.rate_rps:.3f}/s, errors "
        f"{_fmt('error_ratio', c.error_ratio)}, p50 {_fmt('_s', c.p50_s)} p90 "
        f"{_fmt('_s', c.p90_s)} p99 {_fmt('_s', c.p99_s)} mean {_fmt('_s', c.mean_s)}"
    )
    typer.echo(
        f"            baseline: {b.requests:.0f} requests, {b.rate_rps:.3f}/s, errors "
        f"{_fmt('error_ratio', b.error_ratio)}, p50 {_fmt('_s', b.p50_s)} p90 "
        f"{_fmt('_s', b.p90_s)} p99 {_fmt('_s', b.p99_s)} mean {_fmt('_s', b.mean_s)}"
    )
    typer.echo(
        f"{'per window (median)':<20}{'current':>12}{'baseline':>12}{'change':>9}"
        f"{'p-value':>10}{'effect r':>10}{'windows':>10}  verdict"
    )
    for name, cmp in a.comparisons.items():
        change = f"{cmp.relative_change:+.1%}" if math.isfinite(cmp.relative_change) else "-"
        p = f"{cmp.p_value:.2g}" if math.isfinite(cmp.p_value) else "-"
        r = f"{cmp.rank_biserial:+.2f}" if math.isfinite(cmp.rank_biserial) else "-"
        typer.echo(
            f"{name:<20}{_fmt(name, cmp.median_current):>12}{_fmt(name, cmp.median_baseline):>12}"
            f"{change:>9}{p:>10}{r:>10}{f'{cmp.n_current}/{cmp.n_baseline}':>10}  "
            f"{cmp.verdict()}"
        )
    for s in a.saturation:
        state = "SATURATED" if s.saturated else ("tracks" if s.tracks else "independent")
        cap = f" of {s.capacity:g}" if s.capacity is not None else ""
        typer.echo(
            f"saturation {s.resource}: rho {s.correlation.rho:.2f} (p {s.correlation.p_value:.2g},"
            f" {s.correlation.n} windows), p95 {s.p95:.3g}{cap}: {state}"
        )
    typer.echo(
        "test: one-sided Mann-Whitney U over per-window values; effect r = rank-biserial; "
        "flagged when p < alpha and |change| >= min-change"
    )
    typer.echo("regressions: " + (", ".join(a.regressions) or "none"))


def _print_model(m: object) -> None:
    from monitoring.perf.analysis import ModelAnalysis

    assert isinstance(m, ModelAnalysis)
    c = m.latency

    def qs(d: dict[float, float]) -> str:
        return " ".join(
            f"p{q * 100:g} {v:.2f}ms" if math.isfinite(v) else f"p{q * 100:g} -"
            for q, v in d.items()
        )

    typer.echo(f"model {m.model}: version {m.version} against {m.against} (model_latency_ms)")
    typer.echo(f"  {m.version}: {m.n_current} predictions, {qs(m.current_quantiles)}")
    typer.echo(f"  {m.against}: {m.n_baseline} predictions, {qs(m.baseline_quantiles)}")
    change = f"{c.relative_change:+.1%}" if math.isfinite(c.relative_change) else "-"
    typer.echo(
        f"  median change {change}, Hodges-Lehmann shift {c.hodges_lehmann:.3g} ms, "
        f"Mann-Whitney p {c.p_value:.2g}, effect r {c.rank_biserial:+.2f}: {c.verdict()}"
    )
    typer.echo("regressions: " + ("latency" if c.regression else "none"))


@app.command("suggest")
def suggest(
    service: Annotated[str | None, typer.Option(help="The service label.")] = None,
    since: Annotated[str, typer.Option(help="Period, up to --until.")] = "24h",
    window: Annotated[str, typer.Option(help="Window of the per-window values.")] = "5m",
    until: Annotated[float | None, typer.Option(help="End, Unix seconds (default now).")] = None,
    models: Annotated[bool, typer.Option(help="Also rank models by inference time.")] = True,
    min_share: Annotated[float, typer.Option(help="Share of time that makes a hot spot.")] = 0.2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Annotated[str | None, typer.Option(help="Store URL (default from settings).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Concrete suggestions from the data, each with its evidence: hot routes and models,
    error hotspots, latency tracking a saturated resource, over- or under-used capacity."""
    import json

    from monitoring.perf import optimization, store_io
    from monitoring.query.client import StoreError, open_store

    if service is None and not models:
        raise typer.BadParameter("give --service, or leave --models on")
    if not 0 < min_share <= 1:
        raise typer.BadParameter("between 0 and 1", param_hint="--min-share")
    start, end, _span = _period_bounds(since, until)
    w = seconds_of(window, "window")
    settings = load_settings(config)
    try:
        with open_store(settings, url, fallback=url is None) as client:
            found = store_io.suggestions(
                client, service, since_s=end - start, until_s=end, window_s=w, models=models,
                thresholds=optimization.Thresholds(min_share=min_share),
            )  # fmt: skip
    except (StoreError, store_io.BadQuery) as e:
        err.print(f"[red]suggest failed:[/] {e}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_jsonable(found), indent=2))
        return
    subject = f"service {service}" if service else "models"
    typer.echo(f"{subject}: {_iso(start)} .. {_iso(end)}: {len(found)} suggestion(s)")
    for i, s in enumerate(found, 1):
        typer.echo(f"{i}. [{s.kind}] {s.message}")
        ev = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.evidence.items()
        )
        typer.echo(f"   evidence: {ev}")


@app.command("runs")
def runs(
    since: Annotated[str, typer.Option(help="Period, up to --until.")] = "7d",
    until: Annotated[float | None, typer.Option(help="End, Unix seconds (default now).")] = None,
    target: Annotated[str | None, typer.Option(help="Only runs of this target.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    url: Annotated[str | None, typer.Option(help="Store URL (default from settings).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Recorded benchmark runs side by side: rates, errors and latency percentiles."""
    import json

    from monitoring.perf import store_io
    from monitoring.query.client import StoreError, open_store

    start, end, _span = _period_bounds(since, until)
    settings = load_settings(config)
    try:
        with open_store(settings, url, fallback=url is None) as client:
            found = store_io.fetch_runs(client, start, end, target)
    except (StoreError, store_io.BadQuery) as e:
        err.print(f"[red]runs failed:[/] {e}")
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(_jsonable(found), indent=2))
        return
    typer.echo(
        f"{'run_id':<26}{'target rate':>12}{'achieved':>10}{'requests':>10}{'errors':>8}"
        f"{'p50':>11}{'p90':>11}{'p99':>11}{'p99.9':>11}  target"
    )
    for r in found:
        q = "".join(f"{_fmt('_s', r.quantiles.get(k, math.nan)):>11}"
                    for k in ("0.5", "0.9", "0.99", "0.999"))  # fmt: skip
        typer.echo(
            f"{r.run_id[:25]:<26}{r.target_rate:>12.1f}{r.achieved_rate:>10.1f}"
            f"{r.requests:>10.0f}{r.errors:>8.0f}{q}  {r.target}"
        )
    typer.echo(f"{len(found)} run(s)")
