"""The UI's routes in-process (Starlette's TestClient), with a stand-in store behind
httpx's MockTransport: panel requests and their bounds, what is forwarded to the
store, saving dashboards, auth, headers and the live stream."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import promql_parser
import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from starlette.testclient import TestClient

from monitoring.config import Settings, UiSettings
from monitoring.ui.dashboards import Query
from monitoring.ui.panels import PanelError, choose_step, points, prom_frames, substitute
from monitoring.ui.server import CSP, UiServer
from monitoring.ui.store import StoreClient

HOUR = 3_600_000
END = 1_800_000_000_000
TOKEN = "ui-t0ken"

DASHBOARD = """
title: Test
variables:
  - {name: service, label: service, match: up}
rows:
  - panels:
      - {id: rate, title: Rate, queries: [{promql: 'rate(x{service=~"$service"}[$__rate_interval])',
                                          legend: "{{service}}"}]}
      - {id: now, type: stat, queries: [{promql: sum(x)}]}
      - id: sql
        type: table
        queries: [{sql: "SELECT {service:String} AS s, {step_s:UInt32} AS st"}]
      - {id: heat, type: heatmap, queries: [{promql: 'sum by (le) (rate(h_bucket[1m]))'}]}
"""


class FakeStore:
    """Answers as the store would; records what it was asked."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.series = 3
        self.prom_error: tuple[int, str] | None = None
        self.holes = False
        self.grid = False  # answer format=grid as the store does (else as Prometheus)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        if path.startswith("/api/v1/"):
            if self.prom_error:
                status, text = self.prom_error
                body = {"status": "error", "errorType": "bad_data", "error": text}
                return httpx.Response(status, json=body)
            form = self.form(request)
            if path.startswith("/api/v1/label/"):
                return httpx.Response(200, json={"status": "success", "data": ["a", "b"]})
            if path == "/api/v1/query_range":
                start, end, step = float(form["start"]), float(form["end"]), float(form["step"])
                ts = [start + k * step for k in range(int((end - start) // step) + 1)]
                result = [
                    {"metric": {"service": f"s{i}", "le": str(0.1 * (i + 1))},
                     "values": [[t, str(i + 1.0)] for t in ts]}
                    for i in range(self.series)
                ]  # fmt: skip
                if self.holes:
                    for r in result:
                        vs = r["values"]
                        vs[2][1], vs[3][1] = "NaN", "+Inf"
                        del vs[1]
                data = {"resultType": "matrix", "result": result}
                if self.grid and form.get("format") == "grid":  # as the store answers it
                    data |= {"start_ms": round(start * 1000), "step_ms": round(step * 1000)}
                    for r in result:
                        v: list[str | None] = [None] * len(ts)
                        for t, x in r.pop("values"):
                            v[round((t - start) / step)] = x
                        r["v"] = v
                return httpx.Response(200, json={"status": "success", "data": data})
            result = [{"metric": {}, "value": [END / 1000, "NaN"]}]
            data = {"resultType": "vector", "result": result}
            return httpx.Response(200, json={"status": "success", "data": data})
        if path == "/":
            meta = [{"name": "s", "type": "String"}, {"name": "st", "type": "UInt32"}]
            return httpx.Response(200, json={"meta": meta, "data": [["x", 5]], "rows": 1})
        return httpx.Response(404)

    @staticmethod
    def form(request: httpx.Request) -> dict[str, str]:
        pairs = parse_qs(request.content.decode()) if request.method == "POST" else {}
        pairs.update(parse_qs(request.url.query.decode()))
        return {k: v[0] for k, v in pairs.items()}


@pytest.fixture
def fake() -> FakeStore:
    return FakeStore()


def make_server(tmp_path: Path, fake: FakeStore, token: str = "", **ui: Any) -> UiServer:
    base = Settings.load(None)
    shipped = tmp_path / "shipped"
    shipped.mkdir(exist_ok=True)
    (shipped / "test.yaml").write_text(DASHBOARD)
    settings = base.model_copy(update={
        "ui": UiSettings.model_validate(
            {**base.ui.model_dump(), "dashboards_dir": str(tmp_path / "user"), **ui}
        ),
        "api": base.api.model_copy(update={"token": SecretStr(token)}),
    })  # fmt: skip
    store = StoreClient("http://store", transport=httpx.MockTransport(fake.handle))
    return UiServer(settings, CollectorRegistry(), "127.0.0.1", 0, store=store, shipped_dir=shipped)


@pytest.fixture
def server(tmp_path: Path, fake: FakeStore) -> Iterator[UiServer]:
    s = make_server(tmp_path, fake)
    yield s
    s.server.sock.close()


@pytest.fixture
def client(server: UiServer) -> Iterator[TestClient]:
    with TestClient(server.app, base_url="http://127.0.0.1") as c:
        yield c


def panel(client: TestClient, pid: str, **params: Any) -> httpx.Response:
    q = {"start": END - HOUR, "end": END, "width": 600, **params}
    return client.get(f"/api/ui/dashboards/test/panels/{pid}", params=q)


# -- step and variables -----------------------------------------------------------------


@given(
    start=st.integers(0, 2_000_000_000_000),
    span=st.integers(1, 40 * 86_400_000),
    width=st.integers(10, 4000),
    min_step=st.sampled_from([1, 10, 60]),
)
def test_a_panel_never_gets_more_points_than_pixels(
    start: int, span: int, width: int, min_step: int
) -> None:
    step = choose_step(start, start + span, width, min_step)
    assert step >= min_step
    assert points(start, start + span, step) <= width


def test_variables_are_escaped_and_unknown_ones_refused() -> None:
    hostile = 'v"}) or vector(1) or x{a="'
    expr = promql_parser.parse(substitute('x{a=~"$a"}', {"a": hostile}, 15))
    assert isinstance(expr, promql_parser.VectorSelector)  # still one selector
    [matcher] = expr.matchers.matchers
    assert re.fullmatch(matcher.value, hostile)  # the value, literally
    assert not re.fullmatch(matcher.value, "v")
    with pytest.raises(PanelError, match=r"\$b"):
        substitute('x{b=~"$b"}', {}, 15)


# -- panels through the proxy -----------------------------------------------------------


def test_a_range_panel_asks_the_store_for_at_most_one_point_per_pixel(
    client: TestClient, fake: FakeStore
) -> None:
    resp = panel(client, "rate", width=300, **{"var-service": "api"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    [req] = fake.requests
    form = fake.form(req)
    assert req.url.path == "/api/v1/query_range"
    assert form["query"] == 'rate(x{service=~"api"}[60s])'
    step = float(form["step"])
    assert (float(form["end"]) - float(form["start"])) / step + 1 <= 300
    assert form["end"] == f"{END / 1000:.3f}"  # the last point is the end itself
    assert round(float(form["end"]) - float(form["start"]), 3) % step == 0
    assert body["step_s"] == step
    assert [f["name"] for f in body["frames"]] == ["s0", "s1", "s2"]
    assert len(body["frames"][0]["v"]) <= 300


def test_a_range_series_is_its_grid_and_the_store_s_strings_with_gaps(
    client: TestClient, fake: FakeStore
) -> None:
    fake.holes = True  # no point at k=1, "NaN" at k=2, "+Inf" at k=3
    body = panel(client, "rate", width=300).json()
    [req] = fake.requests
    form = fake.form(req)
    n = round((float(form["end"]) - float(form["start"])) / float(form["step"])) + 1
    f = body["frames"][0]
    assert "t" not in f
    assert f["start"] == body["start"] == round(float(form["start"]) * 1000)
    assert f["step"] == body["step_s"] * 1000
    assert f["start"] + (len(f["v"]) - 1) * f["step"] == body["end"]
    assert len(f["v"]) == n
    assert f["v"][:5] == ["1.0", None, "NaN", "+Inf", "1.0"]
    assert f["labels"] == {"service": "s0", "le": "0.1"} and f["name"] == "s0"


def test_the_store_s_grid_answer_gives_the_same_frames(client: TestClient, fake: FakeStore) -> None:
    fake.holes = True
    pairs = panel(client, "rate", width=300).json()
    fake.grid = True
    grid = panel(client, "rate", width=300).json()
    assert all(fake.form(r)["format"] == "grid" for r in fake.requests)
    assert grid == pairs
    assert grid["frames"][0]["v"][:5] == ["1.0", None, "NaN", "+Inf", "1.0"]


def test_a_grid_answer_keeps_strings_on_the_asked_grid_only() -> None:
    def frames(item: Any, start_ms: int = 1000, step_ms: int = 1000) -> Any:
        data = {"resultType": "matrix", "start_ms": start_ms, "step_ms": step_ms,
                "result": [item]}  # fmt: skip
        return prom_frames(data, Query(promql="x"), 10, 1000, 1, 4000)[0]

    [f] = frames({"metric": {}, "v": ["1", 2, None, {"a": 1}, "5", "6"]})
    assert f["v"] == ["1", None, None, None]  # not strings: gaps; past the end: cut
    assert frames({"metric": {}, "v": "1"})[0]["v"] == []
    assert frames({"metric": {}, "v": {"0": "1"}})[0]["v"] == []
    # another grid than the one asked for: not trusted (and no pairs to fall back on)
    assert frames({"metric": {}, "v": ["1"]}, start_ms=0)[0]["v"] == []
    assert frames({"metric": {}, "v": ["1"]}, step_ms=2000)[0]["v"] == []
    assert frames("not an object") == []


def test_points_off_the_grid_or_not_strings_are_dropped() -> None:
    data = {"resultType": "matrix", "result": [
        {"metric": {"a": "<b>x</b>"},
         "values": [[1, "1"], [1.5, "9"], [3, 2], [4, "4"], [99, "9"]]},
    ]}  # fmt: skip
    [f], n = prom_frames(data, Query(promql="x"), 10, 1000, 1, 4000)
    assert n == 1 and f["name"] == '{a="<b>x</b>"}'
    assert f["v"] == ["1", None, None, "4"]
    [f], _ = prom_frames({"resultType": "matrix", "result": [{"values": [["x", "1"]]}]},
                         Query(promql="x"), 10, 1000, 1, 2000)  # fmt: skip
    assert f["v"] == []


def test_series_beyond_the_bound_are_cut_with_a_warning(tmp_path: Path, fake: FakeStore) -> None:
    fake.series = 30
    s = make_server(tmp_path, fake, max_series=5)
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        body = panel(c, "rate").json()
    s.server.sock.close()
    assert len(body["frames"]) == 5
    assert body["series_total"] == 30
    assert "showing 5 of 30 series" in body["warnings"][0]


def test_instant_panels_ask_at_the_end_and_nan_is_no_value(
    client: TestClient, fake: FakeStore
) -> None:
    body = panel(client, "now").json()
    [req] = fake.requests
    assert req.url.path == "/api/v1/query"
    assert float(fake.form(req)["time"]) == END / 1000
    assert body["frames"] == [{"kind": "value", "name": "sum(x)", "labels": {}, "value": None}]


def test_sql_panels_bind_variables_as_parameters_never_in_the_text(
    client: TestClient, fake: FakeStore
) -> None:
    hostile = "x'; DROP TABLE samples; --"
    body = panel(client, "sql", **{"var-service": hostile}).json()
    [req] = fake.requests
    assert req.content.decode() == "SELECT {service:String} AS s, {step_s:UInt32} AS st"
    params = dict(req.url.params)
    assert params["param_service"] == hostile
    assert "param_start_ms" not in params  # only the placeholders the text names
    assert params["max_result_rows"] == "5000"
    assert body["frames"][0]["rows"] == [["x", 5]]


def test_a_heatmap_panel_gets_per_bucket_counts(client: TestClient) -> None:
    [frame] = panel(client, "heat").json()["frames"]
    assert frame["kind"] == "heatmap"
    assert frame["y"] == ["0.1", "0.2", "0.30000000000000004"]
    assert frame["z"][0][0] == 1.0 and frame["z"][1][0] == 1.0


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"start": END, "end": END - 1}, "start must be before end"),
        ({"start": END - 40 * 86_400_000}, "ui.max_range"),
        ({"width": 5}, "width"),
        ({"width": 100_000}, "width"),
        ({"start": "yesterday"}, "start: a whole number"),
        ({"var-nope": "x"}, "not a variable"),
        ({"var-service": "x" * 300}, "at most 256"),
    ],
)
def test_bad_panel_requests_are_refused_before_the_store(
    client: TestClient, fake: FakeStore, server: UiServer, params: dict[str, Any], fragment: str
) -> None:
    resp = panel(client, "rate", **params)
    assert resp.status_code == 400
    assert fragment in resp.json()["error"]
    assert fake.requests == []
    assert (
        server.server.registry.get_sample_value(
            "monitoring_ui_refused_total", {"reason": "bad-panel-request"}
        )
        == 1.0
    )


def test_a_query_over_the_length_bound_is_refused(tmp_path: Path, fake: FakeStore) -> None:
    s = make_server(tmp_path, fake, max_query_chars=64)
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        resp = panel(c, "rate", **{"var-service": "a" * 60})
    s.server.sock.close()
    assert resp.status_code == 400 and "max_query_chars" in resp.json()["error"]
    assert fake.requests == []


def test_unknown_dashboards_and_panels_are_404(client: TestClient) -> None:
    assert client.get("/api/ui/dashboards/nope/panels/rate").status_code == 404
    assert panel(client, "nope").status_code == 404
    assert client.get("/api/ui/dashboards/BAD/panels/rate").status_code == 400


def test_the_store_s_errors_reach_the_page_with_their_text(
    client: TestClient, fake: FakeStore
) -> None:
    fake.prom_error = (400, 'invalid parameter "query": 1:3: parse error')
    resp = panel(client, "rate")
    assert resp.status_code == 400 and "parse error" in resp.json()["error"]
    fake.prom_error = (401, "missing token")
    assert panel(client, "rate").status_code == 502  # the UI's own settings are wrong


def test_an_unreachable_store_is_a_502(tmp_path: Path) -> None:
    def down(_request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    s = make_server(tmp_path, FakeStore())
    s.ui.store.transport = httpx.MockTransport(down)
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        resp = panel(c, "rate")
        home = c.get("/api/ui/home").json()
    s.server.sock.close()
    assert resp.status_code == 502 and "did not answer" in resp.json()["error"]
    assert home["health"]["store"]["status"] == "unreachable"


def test_an_answer_over_the_size_bound_is_refused(tmp_path: Path, fake: FakeStore) -> None:
    s = make_server(tmp_path, fake)
    s.ui.store.max_response_bytes = 1024
    fake.series = 50
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        resp = panel(c, "rate")
    s.server.sock.close()
    assert resp.status_code == 502 and "over 1024 bytes" in resp.json()["error"]


def test_variable_values_come_from_label_values(client: TestClient, fake: FakeStore) -> None:
    resp = client.get("/api/ui/dashboards/test/variables/service",
                      params={"start": END - HOUR, "end": END})  # fmt: skip
    assert resp.json()["values"] == ["a", "b"]
    [req] = fake.requests
    assert req.method == "GET" and req.url.path == "/api/v1/label/service/values"
    assert req.url.params["match[]"] == "up"


# -- dashboards through the API ---------------------------------------------------------

NEW = {"title": "New", "rows": [{"panels": [{"queries": [{"promql": "up"}]}]}]}


def test_create_update_and_read_back(client: TestClient, server: UiServer) -> None:
    resp = client.post("/api/ui/dashboards", json={"name": "mine", "dashboard": NEW})
    assert resp.status_code == 201, resp.text
    assert (
        client.post("/api/ui/dashboards", json={"name": "mine", "dashboard": NEW}).status_code
        == 409
    )
    resp = client.put("/api/ui/dashboards/mine", json={**NEW, "title": "Changed"})
    assert resp.status_code == 200
    assert client.get("/api/ui/dashboards/mine").json()["dashboard"]["title"] == "Changed"
    saved = server.ui.dashboards.user_dir / "mine.yaml"
    assert "Changed" in saved.read_text()
    names = {d["name"]: d["user"] for d in client.get("/api/ui/dashboards").json()["dashboards"]}
    assert names == {"mine": True, "test": False}


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/etc/x", "UP", ".x", "%2e%2e"])
def test_saving_under_a_name_that_leaves_the_directory_is_refused(
    client: TestClient, tmp_path: Path, name: str
) -> None:
    resp = client.post("/api/ui/dashboards", json={"name": name, "dashboard": NEW})
    assert resp.status_code == 400 and "a dashboard name" in resp.json()["error"]
    resp = client.put(f"/api/ui/dashboards/{name}", json=NEW)
    assert resp.status_code in (400, 404, 405)
    assert not [p for p in tmp_path.rglob("*.yaml") if p.name != "test.yaml"]


def test_bodies_are_checked(client: TestClient) -> None:
    resp = client.put("/api/ui/dashboards/x", content=json.dumps(NEW),
                      headers={"Content-Type": "text/plain"})  # fmt: skip
    assert resp.status_code == 415
    resp = client.put("/api/ui/dashboards/x", content=b"{" + b" " * (2 << 20) + b"}",
                      headers={"Content-Type": "application/json"})  # fmt: skip
    assert resp.status_code == 413
    resp = client.put("/api/ui/dashboards/x", json={"title": "T", "rows": []})
    assert resp.status_code == 400 and "rows" in resp.json()["error"]


# -- pages, headers, auth ---------------------------------------------------------------


def test_pages_and_plotly_are_served_with_a_strict_csp(client: TestClient) -> None:
    import plotly

    for path in ("/", "/d/test", "/static/dashboard.js", "/api/ui/dashboards"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        assert resp.headers["content-security-policy"] == CSP
        assert "script-src 'self';" in CSP and "unsafe-eval" not in CSP
        assert resp.headers["x-content-type-options"] == "nosniff"
    js = client.get("/static/plotly.min.js")
    shipped = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    assert js.status_code == 200 and js.content == shipped.read_bytes()
    page = client.get("/d/test").text
    assert "<script>" not in page and "cdn" not in page.lower() and " on" not in page.lower()


def test_plotly_is_gzipped_once_with_an_etag_and_revalidated(client: TestClient) -> None:
    import plotly

    shipped = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_bytes()
    gz = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert gz.headers["content-encoding"] == "gzip"
    assert int(gz.headers["content-length"]) < len(shipped) / 2  # what went over the wire
    assert gz.content == shipped  # httpx decoded it
    assert "max-age=86400" in gz.headers["cache-control"]
    etag = gz.headers["etag"]
    plain = client.get("/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == shipped
    again = client.get("/static/plotly.min.js", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get("/static/plotly.min.js", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200


def test_a_long_step_lets_the_store_read_windows_of_half_a_step(
    client: TestClient, fake: FakeStore
) -> None:
    assert panel(client, "rate", width=300).status_code == 200  # 1 h: step 15 s
    assert "max_source_resolution" not in fake.form(fake.requests[-1])
    resp = panel(client, "rate", start=END - 24 * HOUR, width=1000)  # step 2 min
    assert resp.status_code == 200, resp.text
    form = fake.form(fake.requests[-1])
    assert form["step"] == "120" and form["max_source_resolution"] == "60s"
    panel(client, "now", start=END - 24 * HOUR, width=1000)  # instant: the raw newest
    assert "max_source_resolution" not in fake.form(fake.requests[-1])


@pytest.mark.parametrize("path", ["/static/app.py", "/static/..%2Fapp.py", "/static/x.html"])
def test_only_the_shipped_scripts_and_styles_are_static(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def test_with_a_token_the_browser_is_asked_for_basic_auth(tmp_path: Path) -> None:
    s = make_server(tmp_path, FakeStore(), token=TOKEN)
    basic = "Basic " + base64.b64encode(f"me:{TOKEN}".encode()).decode()
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        resp = c.get("/")
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == 'Basic realm="monitoring ui"'
        assert c.get("/", headers={"Authorization": basic}).status_code == 200
        assert (
            c.get("/api/ui/dashboards", headers={"Authorization": f"Bearer {TOKEN}"}).status_code
            == 200
        )
        wrong = c.get("/d/test", headers={"Authorization": "Bearer wrong"})
        assert wrong.status_code == 401 and "www-authenticate" in wrong.headers
        assert c.get("/healthz").status_code == 200
    s.server.sock.close()


def test_other_hosts_and_origins_are_refused(client: TestClient) -> None:
    assert client.get("/", headers={"Host": "evil.example"}).status_code == 421
    resp = client.post("/api/ui/dashboards", json={"name": "x", "dashboard": NEW},
                       headers={"Origin": "http://evil.example"})  # fmt: skip
    assert resp.status_code == 403


def test_the_live_stream_sends_the_newest_window_end(tmp_path: Path) -> None:
    fake = FakeStore()
    original = fake.handle

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/":
            meta = [{"name": "end_ms", "type": "Int64"}]
            return httpx.Response(200, json={"meta": meta, "data": [[END]], "rows": 1})
        return original(request)

    fake.handle = handle  # type: ignore[method-assign]
    s = make_server(tmp_path, fake, live_poll="50ms")
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        with c.stream("GET", "/api/ui/events") as resp:
            assert resp.headers["content-type"].startswith("text/event-stream")
            lines = []
            for line in resp.iter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    break
            s.ui.feed.closed = True
        assert "event: window" in lines
        assert json.loads(lines[-1][5:]) == {"end_ms": END}
        s.ui.live_clients = s.ui.ui.max_live_clients
        assert c.get("/api/ui/events").status_code == 503
    s.server.sock.close()


def test_annotations_are_events_with_their_text(tmp_path: Path) -> None:
    fake = FakeStore()

    def handle(request: httpx.Request) -> httpx.Response:
        fake.requests.append(request)
        meta = [{"name": "ts", "type": "DateTime64(3, 'UTC')"}, {"name": "t", "type": "String"}]
        rows = [["2027-01-15 08:00:00.000", "<b>spike</b>"], ["not a time", "dropped"]]
        return httpx.Response(200, json={"meta": meta, "data": rows, "rows": 2})

    s = make_server(tmp_path, fake)
    s.ui.store.transport = httpx.MockTransport(handle)
    text = DASHBOARD.replace(
        "rows:\n",
        "annotations:\n  - name: events\n    sql: SELECT ts, t FROM x WHERE ts < "
        "fromUnixTimestamp64Milli({end_ms:Int64})\nrows:\n",
        1,
    )
    (s.ui.dashboards.shipped_dir / "ann.yaml").write_text(text)  # type: ignore[operator]
    with TestClient(s.app, base_url="http://127.0.0.1") as c:
        resp = c.get("/api/ui/dashboards/ann/annotations", params={"start": END - HOUR, "end": END})
    s.server.sock.close()
    assert resp.status_code == 200, resp.text
    [a] = resp.json()["annotations"]
    expected_ms = int(datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp() * 1000)
    assert a == {"name": "events", "color": "#f2495c", "t": [expected_ms], "text": ["<b>spike</b>"]}
    [req] = fake.requests
    assert dict(req.url.params)["param_end_ms"] == str(END)


def test_off_loopback_the_ui_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    from monitoring.config import ConfigError

    base = Settings.load(None)
    with pytest.raises(ConfigError, match=r"api\.token"):
        UiServer(base, CollectorRegistry(), "0.0.0.0", 0, store=StoreClient("http://store"))
