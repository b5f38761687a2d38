"""`monitoring ui` as an attacker or a careless client uses it: odd numbers in query
parameters, bodies nested past the parser's recursion, names with a trailing newline,
many live streams at once, CSV export of formula-like values. Each was a 500, a bound
passed or a file outside the name rules before its fix."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from starlette.testclient import TestClient

from monitoring.ui.dashboards import DashboardError, check_name
from monitoring.ui.server import UiServer
from unit.test_ui_app import END, HOUR, FakeStore, make_server

BODY = {"title": "T", "rows": [{"panels": [{"queries": [{"promql": "up"}]}]}]}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[UiServer]:
    s = make_server(tmp_path, FakeStore())
    yield s
    s.server.sock.close()


@pytest.fixture
def client(server: UiServer) -> Iterator[TestClient]:
    with TestClient(server.app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    "value", ["--5", "-", "²", "١٢٣", "1e3", " 5", "5 ", "0x10", "+5", "9" * 20, "1_000"]
)
def test_numbers_that_are_not_plain_ascii_are_a_400(client: TestClient, value: str) -> None:
    """``"--5"`` passed ``lstrip("-").isdigit()`` and ``"²"`` ``isdigit()``; ``int()``
    then raised: a 500 for any client."""
    for key in ("start", "end", "width"):
        params = {"start": END - HOUR, "end": END, "width": 600, key: value}
        r = client.get("/api/ui/dashboards/test/panels/rate", params=params)
        assert r.status_code == 400, (key, value, r.status_code, r.text)
        assert key in r.json()["error"]


def test_a_body_nested_past_the_parser_s_recursion_is_a_400(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    headers = {"content-type": "application/json"}
    for method, path in (("POST", "/api/ui/dashboards"), ("PUT", "/api/ui/dashboards/deep")):
        r = client.request(method, path, content=deep, headers=headers)
        assert r.status_code == 400, (method, r.status_code, r.text)
        assert "JSON" in r.json()["error"]


@pytest.mark.parametrize("name", ["evil\n", "a\n", "x\r", "ok\x00"])
def test_a_name_with_a_trailing_newline_is_refused(
    client: TestClient, server: UiServer, name: str
) -> None:
    """``re.match`` with ``$`` accepts ``"evil\\n"``: the file ``evil\\n.yaml`` was saved,
    and its Grafana download's Content-Disposition header carried the newline."""
    with pytest.raises(DashboardError):
        check_name(name)
    r = client.put(f"/api/ui/dashboards/{quote(name)}", json=BODY)
    assert r.status_code == 400, r.text
    user = Path(server.ui.dashboards.user_dir)
    assert not user.exists() or list(user.iterdir()) == []


async def _open_stream(host: str, port: int) -> tuple[bytes, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /api/ui/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await writer.drain()
    return await reader.readline(), writer


def test_live_streams_opened_at_once_stay_within_the_bound(tmp_path: Path) -> None:
    """The count was taken when a stream's body started, after the check: 20 pages
    connecting at once got 6 streams with ``max_live_clients: 2``."""
    server = make_server(tmp_path, FakeStore(), max_live_clients=2).start()
    host, port = server.address

    async def main() -> None:
        opened = await asyncio.gather(*[_open_stream(host, port) for _ in range(20)])
        accepted = sum(1 for status, _ in opened if b" 200 " in status)
        assert accepted == 2, f"{accepted} live streams accepted with max_live_clients 2"
        assert server.ui.live_clients == 2
        for _, w in opened:
            w.close()
        deadline = asyncio.get_running_loop().time() + 30
        while server.ui.live_clients and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert server.ui.live_clients == 0  # a closed page gives its place back
        status, w = await _open_stream(host, port)
        assert b" 200 " in status
        w.close()

    try:
        asyncio.run(main())
    finally:
        server.stop()


def test_a_stream_whose_client_never_reads_ends_and_gives_its_place_back() -> None:
    """A client that never reads blocks the stream's writes once the socket's buffers
    are full; the stream's deadline is checked between writes, so only a bound around
    the whole response frees its place."""
    from monitoring.ui.app import _CountedStream

    released: list[int] = []

    async def endless() -> AsyncIterator[str]:
        while True:
            yield "data: x\n\n"

    async def main() -> None:
        blocked = asyncio.Event()

        async def send(message: Any) -> None:
            if message["type"] == "http.response.body":
                blocked.set()
                await asyncio.Event().wait()  # the socket never drains

        async def receive() -> Any:
            await asyncio.Event().wait()

        stream = _CountedStream(lambda: released.append(1), endless(), max_s=0.5)
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        await asyncio.wait_for(stream(scope, receive, send), 30)
        assert blocked.is_set()

    asyncio.run(main())
    assert released == [1]


def test_times_past_the_year_9999_never_reach_the_store(tmp_path: Path) -> None:
    """An ``end`` of 10^18 ms passed every check (only the range's length was bounded)
    and went to the store as a time its Int64 milliseconds and dates cannot hold."""
    fake = FakeStore()
    server = make_server(tmp_path, fake)
    try:
        with TestClient(server.app, base_url="http://127.0.0.1") as c:
            for end in (10**18, 253_402_300_800_000):
                for path in ("panels/rate", "variables/service", "annotations"):
                    params = {"start": end - HOUR, "end": end}
                    r = c.get(f"/api/ui/dashboards/test/{path}", params=params)
                    assert r.status_code == 400 and "9999" in r.json()["error"], (path, r.text)
            assert fake.requests == []
            ok = c.get("/api/ui/dashboards/test/panels/rate", params={"start": 0, "end": HOUR})
            assert ok.status_code == 200
    finally:
        server.server.sock.close()


def test_a_client_cannot_fill_the_disk_with_dashboards(
    server: UiServer, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every POST of a new name wrote another file of up to 256 KB, without bound."""
    monkeypatch.setattr(server.ui.dashboards, "MAX_USER", 3)
    for i in range(3):
        assert client.post(
            "/api/ui/dashboards", json={"name": f"d{i}", "dashboard": BODY}
        ).is_success
    r = client.post("/api/ui/dashboards", json={"name": "d3", "dashboard": BODY})
    assert r.status_code == 400 and "at most 3" in r.json()["error"]
    assert client.put("/api/ui/dashboards/d4", json=BODY).status_code == 400
    assert client.put("/api/ui/dashboards/d1", json=BODY).status_code == 200  # a change is fine
    assert len(list(Path(server.ui.dashboards.user_dir).iterdir())) == 3


def test_an_annotation_time_of_inf_is_dropped_not_a_500(tmp_path: Path) -> None:
    """``time_ms("inf")`` raised OverflowError (``round(inf)``): a 500 for the page."""
    fake = FakeStore()

    def handle(request: httpx.Request) -> httpx.Response:
        meta = [{"name": "ts", "type": "String"}, {"name": "t", "type": "String"}]
        rows = [["inf", "a"], ["-inf", "b"], ["1e300", "c"], ["nan", "d"], ["1700000000", "ok"]]
        return httpx.Response(200, json={"meta": meta, "data": rows, "rows": len(rows)})

    server = make_server(tmp_path, fake)
    server.ui.store.transport = httpx.MockTransport(handle)
    shipped = Path(str(server.ui.dashboards.shipped_dir))
    (shipped / "ann.yaml").write_text(
        "title: A\nannotations:\n  - {name: e, sql: 'SELECT ts, t FROM x'}\n"
        "rows:\n  - panels:\n      - {queries: [{promql: up}]}\n"
    )
    try:
        with TestClient(server.app, base_url="http://127.0.0.1") as c:
            r = c.get(
                "/api/ui/dashboards/ann/annotations", params={"start": END - HOUR, "end": END}
            )
        assert r.status_code == 200, r.text
        [a] = r.json()["annotations"]
        assert a["t"] == [1_700_000_000_000] and a["text"] == ["ok"]
    finally:
        server.server.sock.close()


def test_a_dashboard_file_nested_too_deep_is_listed_with_its_error(
    server: UiServer, client: TestClient
) -> None:
    """PyYAML composes recursively: one file of 50,000 nested lists raised RecursionError,
    which the listing did not expect, and every page's dashboard list was a 500."""
    shipped = Path(str(server.ui.dashboards.shipped_dir))
    (shipped / "deep.yaml").write_text("[" * 50_000 + "]" * 50_000)
    r = client.get("/api/ui/dashboards")
    assert r.status_code == 200, r.text
    listed = {d["name"]: d for d in r.json()["dashboards"]}
    assert "nested too deep" in listed["deep"]["error"] and "title" in listed["test"]
    assert client.get("/api/ui/dashboards/deep").status_code == 400
    assert client.get("/api/ui/home").status_code == 200


def test_a_kept_html_report_is_served_sandboxed_and_streamed(
    client: TestClient, server: UiServer, tmp_path: Path
) -> None:
    """An HTML report (a user's template, its data) is served from the UI's origin: with
    ``Content-Security-Policy: sandbox`` it is a unique origin, so nothing in it can
    call the UI's API with the reader's credentials. A report is streamed whole, in
    chunks; a PDF is not sandboxed (browsers' PDF viewers refuse to run so)."""
    from monitoring.ui import app as ui_app

    out = tmp_path / "reports"
    out.mkdir()
    server.ui.reports_dir = out
    html = b"<html><body>" + b"x" * (3 * ui_app.REPORT_CHUNK + 17) + b"</body></html>"
    (out / "report-daily-2026-12-05.html").write_bytes(html)
    (out / "report-daily-2026-12-05.pdf").write_bytes(b"%PDF-1.7 " + b"y" * 1000)

    r = client.get("/reports/report-daily-2026-12-05.html")
    assert r.status_code == 200 and r.content == html
    assert r.headers["content-length"] == str(len(html))
    policies = r.headers.get_list("content-security-policy")
    assert "sandbox" in [p.strip() for p in policies], policies
    assert r.headers["content-type"].startswith("text/html")

    r = client.get("/reports/report-daily-2026-12-05.pdf")
    assert r.status_code == 200 and r.content.startswith(b"%PDF") and len(r.content) == 1009
    assert "sandbox" not in [p.strip() for p in r.headers.get_list("content-security-policy")]
    assert client.get("/reports/report-daily-2026-12-06.pdf").status_code == 404
