"""The UI server's own cost of one range panel, in-process: the panel route over a
stand-in store (httpx's MockTransport) answering ``series`` x ``points`` as the store
answers the UI (``format=grid``), the way ``monitoring bench ui`` shapes it. Prints the route's
p50/p99 and the parts (parse the store's JSON, make the frames, encode the answer,
with orjson as the UI does, and with the standard library's json for comparison);
no network, no store. Run: ``.venv/bin/python -m monitoring.bench.ui_panel``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from monitoring.config import Settings, UiSettings
from monitoring.ui import panels
from monitoring.ui.dashboards import Query
from monitoring.ui.server import UiServer
from monitoring.ui.store import StoreClient

DASHBOARD = """
title: Bench
rows:
  - panels:
      - {id: p, title: P, queries: [{promql: 'rate(x[$__rate_interval])', legend: "{{i}}"}]}
"""


def store_answer(series: int, start_s: float, step_s: float, n: int, grid: bool) -> bytes:
    """A query_range answer of ``series`` series of ``n`` points each, as pairs or (what
    the UI asks for) ``format=grid``."""
    data: dict[str, Any] = {"resultType": "matrix"}
    if grid:
        data |= {"start_ms": round(start_s * 1000), "step_ms": round(step_s * 1000)}
    data["result"] = [
        {"metric": {"__name__": "x", "i": f"s{i}", "job": "bench"},
         **({"v": [repr(0.5 + (i * n + k) % 997 / 7) for k in range(n)]} if grid else
            {"values": [[round(start_s + k * step_s, 3), repr(0.5 + (i * n + k) % 997 / 7)]
                        for k in range(n)]})}
        for i in range(series)
    ]  # fmt: skip
    return json.dumps({"status": "success", "data": data}, separators=(",", ":")).encode()


def ms(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=200)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args(argv)
    end_ms, width = 1_800_000_000_000, a.points
    step = 5
    start_ms = end_ms - (a.points - 1) * step * 1000
    cache: dict[str, bytes] = {}

    def handle(request: httpx.Request) -> httpx.Response:
        form = dict(httpx.QueryParams(request.content.decode()))
        key = f"{form['start']}/{form['step']}/{form.get('format')}"
        if key not in cache:
            first = float(form["start"])
            n = round((float(form["end"]) - first) / float(form["step"])) + 1
            grid = form.get("format") == "grid"
            cache[key] = store_answer(a.series, first, float(form["step"]), n, grid)
        return httpx.Response(200, content=cache[key],
                              headers={"Content-Type": "application/json"})  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        shipped = Path(tmp) / "shipped"
        shipped.mkdir()
        (shipped / "bench.yaml").write_text(DASHBOARD)
        base = Settings.load(None)
        ui = UiSettings.model_validate({**base.ui.model_dump(),
                                        "dashboards_dir": str(Path(tmp) / "u"),
                                        "max_series": max(a.series, 1)})  # fmt: skip
        settings = base.model_copy(update={"ui": ui})
        store = StoreClient("http://store", transport=httpx.MockTransport(handle))
        s = UiServer(settings, CollectorRegistry(), "127.0.0.1", 0, store=store,
                     shipped_dir=shipped)  # fmt: skip
        q = {"start": start_ms, "end": end_ms, "width": width}
        route: list[float] = []
        route_cpu: list[float] = []
        size = 0
        with TestClient(s.app, base_url="http://127.0.0.1") as c:
            for _ in range(a.runs + 2):
                t0, c0 = time.perf_counter(), time.process_time()
                r = c.get("/api/ui/dashboards/bench/panels/p", params=q)
                route.append(time.perf_counter() - t0)
                route_cpu.append(time.process_time() - c0)
                assert r.status_code == 200, r.text[:300]
                size = len(r.content)
        s.server.sock.close()
        route, route_cpu = route[2:], route_cpu[2:]
        body = next(iter(cache.values()))
    parse: list[float] = []
    parse_std: list[float] = []
    shape: list[float] = []
    encode: list[float] = []
    encode_std: list[float] = []
    query = Query(promql="x", legend="{{i}}")
    for _ in range(a.runs):
        t0 = time.perf_counter()
        data = orjson.loads(body)["data"]  # what the UI's store client does
        t1 = time.perf_counter()
        frames = panels.prom_frames(data, query, a.series, start_ms, step, end_ms)[0]
        t2 = time.perf_counter()
        orjson.dumps({"frames": frames})  # what the UI's answers do
        t3 = time.perf_counter()
        json.loads(body)  # the standard library, for comparison
        t4 = time.perf_counter()
        JSONResponse({"frames": frames})
        t5 = time.perf_counter()
        parse.append(t1 - t0)
        shape.append(t2 - t1)
        encode.append(t3 - t2)
        parse_std.append(t4 - t3)
        encode_std.append(t5 - t4)
        del data, frames  # freed here, not inside the next run's timings
    print(f"panel route, {a.series} series x {a.points} points: store answer {len(body)} bytes, "
          f"UI answer {size} bytes")  # fmt: skip
    for name, xs in (
        ("route", route),
        ("route CPU", route_cpu),
        ("parse", parse),
        ("frames", shape),
        ("encode", encode),
        ("parse with json", parse_std),
        ("encode with json", encode_std),
    ):
        print(f"  {name:16s} p50 {ms(xs, 0.5):7.1f} ms  p99 {ms(xs, 0.99):7.1f} ms  "
              f"mean {statistics.fmean(xs) * 1000:7.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
