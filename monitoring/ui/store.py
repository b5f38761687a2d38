"""The UI server's client of the store: the Prometheus API and ClickHouse's HTTP
interface over httpx, with the token, a bounded number of queries in flight and a
bounded answer size.

Each call opens its own ``httpx.AsyncClient`` on the running event loop (a loopback
connection costs well under a millisecond), so the client works from whichever loop
serves the request; they share one TLS context, made once (httpx makes one per client
otherwise, loading the CA bundle: about 45 ms of CPU, more than a panel's parsing and
encoding together). ``transport`` replaces the network in unit tests.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import weakref
from collections.abc import Mapping
from typing import Any

import httpx
import orjson


class StoreError(RuntimeError):
    """The store refused or failed a query: ``status`` (HTTP, 502 when unreachable)
    and the store's own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class StoreClient:
    """Queries to the store at ``url`` (``http://127.0.0.1:8124``)."""

    def __init__(
        self,
        url: str,
        token: str = "",
        timeout_s: float = 35.0,
        concurrency: int = 4,
        max_response_bytes: int = 32 << 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = httpx.Timeout(timeout_s, connect=5.0)
        self.concurrency = concurrency
        self.max_response_bytes = max_response_bytes
        self.transport = transport
        self._slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
            weakref.WeakKeyDictionary()
        )
        self._tls: ssl.SSLContext | None = None

    def _tls_context(self) -> ssl.SSLContext:
        """httpx's default context (certifi's CA bundle), made on first use."""
        if self._tls is None:
            self._tls = httpx.create_ssl_context(trust_env=False)
        return self._tls

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._slots.get(loop)
        if sem is None:
            sem = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        return sem

    async def _request(
        self,
        method: str,
        path: str,
        params: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> tuple[int, bytes]:
        """Status and body (at most ``max_response_bytes``, else StoreError 502)."""
        async with (
            self._slot(),
            httpx.AsyncClient(
                base_url=self.url, headers=self.headers, timeout=self.timeout,
                transport=self.transport, trust_env=False, verify=self._tls_context(),
            ) as client,
        ):  # fmt: skip
            try:
                req = client.build_request(method, path, params=params, data=data, content=content)
                resp = await client.send(req, stream=True)
                try:
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_response_bytes:
                            raise StoreError(
                                502, f"the store's answer is over {self.max_response_bytes} bytes"
                            )
                        chunks.append(chunk)
                finally:
                    await resp.aclose()
            except httpx.HTTPError as e:
                raise StoreError(502, f"the store at {self.url} did not answer: {e!r}"[:500]) from e
        return resp.status_code, b"".join(chunks)

    async def prometheus(
        self, path: str, form: Mapping[str, str], method: str = "POST"
    ) -> dict[str, Any]:
        """``{"data", "warnings"}`` of a Prometheus API answer (POSTed as a form, or
        the parameters in the URL with GET); StoreError with Prometheus's error text."""
        if method == "GET":
            status, body = await self._request("GET", f"/api/v1/{path}", params=form)
        else:
            status, body = await self._request("POST", f"/api/v1/{path}", data=form)
        try:
            obj = orjson.loads(body)  # a 5 MB panel answer: ~3x faster than json.loads
        except ValueError:  # orjson.JSONDecodeError, also for nesting past 1024 levels
            text = body[:500].decode("utf-8", "replace")
            raise StoreError(502 if status < 400 else status, text) from None
        if not isinstance(obj, dict) or obj.get("status") != "success":
            message = obj.get("error", "no error text") if isinstance(obj, dict) else str(obj)
            raise StoreError(status if status >= 400 else 502, str(message)[:1000])
        return {"data": obj.get("data"), "warnings": list(obj.get("warnings") or [])}

    async def sql(
        self, sql: str, params: Mapping[str, str], max_rows: int
    ) -> tuple[list[dict[str, Any]], list[list[Any]]]:
        """Columns (``name``, ``type``) and rows of a read-only statement through
        ClickHouse's HTTP interface, at most ``max_rows`` (more is the store's error)."""
        query = {
            **params,
            "default_format": "JSONCompact",
            "output_format_json_quote_64bit_integers": "0",
            "max_result_rows": str(max_rows),
        }
        status, body = await self._request("POST", "/", params=query, content=sql.encode())
        if status != 200:
            raise StoreError(status, body[:1000].decode("utf-8", "replace").strip())
        try:
            obj = _loads_wide(body)
            return list(obj["meta"]), list(obj["data"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise StoreError(502, "the store's answer is not JSONCompact") from None

    async def health(self) -> dict[str, Any]:
        """The store's ``/healthz`` (its status, or ``unreachable``)."""
        try:
            status, body = await self._request("GET", "/healthz")
            obj = orjson.loads(body)
            return obj if isinstance(obj, dict) else {"status": f"http {status}"}
        except (StoreError, ValueError) as e:
            return {"status": "unreachable", "error": str(e)[:300]}


def _loads_wide(body: bytes) -> Any:
    """JSON with orjson, or the standard library's parser for what orjson refuses: an
    integer past 64 bits (an SQL panel's ``Int128``, unquoted) is valid JSON."""
    try:
        return orjson.loads(body)
    except ValueError:
        return json.loads(body)
