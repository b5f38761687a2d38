"""What every HTTP request must pass before a route sees it.

- **Token**: with ``api.token`` set, every route but the probes (``/healthz``,
  ``/-/healthy``, ``/-/ready``, ``/ping``) wants the token
  (compared in constant time), sent as ``Authorization: Bearer <token>`` or the way
  ClickHouse clients send a password: HTTP basic auth (any user name, the token as
  password) or ``X-ClickHouse-Key``. Never in the URL (``?password=`` is refused: URLs
  end up in proxy logs and shell history). A server bound off loopback refuses to start
  without a token. Refusals of ClickHouse's interface (``/``) answer as a ClickHouse
  server does: ``Code: N. DB::Exception: ...`` with ``X-ClickHouse-Exception-Code``.
- **Host and Origin**: the ``Host`` header must name loopback, the bound address or an
  ``api.allowed_hosts`` entry, and so must ``Origin`` when a browser sends one; a page
  on another site cannot post to the API (CSRF) nor reach it through a rebound DNS name.
- **Bodies**: ``Content-Length`` must be a plain number no larger than the limit; a body
  is read within ``read_timeout`` and cut off at the limit whatever its framing; JSON
  routes want ``Content-Type: application/json`` (which a cross-site form cannot send).

>>> g = Guard.for_bind("127.0.0.1", token="")
>>> g.host_allowed("localhost:8124"), g.host_allowed("evil.example:8124")
(True, False)
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from monitoring.config import ApiSettings, ConfigError

# probes carry no token: liveness and readiness (as ClickHouse's /ping, Prometheus' /-/)
OPEN_PATHS = frozenset({"/healthz", "/ping", "/-/healthy", "/-/ready"})
CLICKHOUSE_PATHS = frozenset({"/"})  # refusals there answer in ClickHouse's error shape
_CODE_NAMES = {194: "REQUIRED_PASSWORD", 516: "AUTHENTICATION_FAILED", 497: "ACCESS_DENIED"}
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


class Refused(Exception):
    """A request the guard turns away: ``status`` and a message for the client."""

    def __init__(self, status: int, message: str, clickhouse_code: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.clickhouse_code = clickhouse_code

    def response(self) -> Response:
        """JSON ``{"error"}``, or ClickHouse's text and header when it has a code."""
        code = self.clickhouse_code
        if code is None:
            return JSONResponse({"error": self.message}, status_code=self.status)
        text = f"Code: {code}. DB::Exception: {self.message}. ({_CODE_NAMES.get(code, 'ERROR')})\n"
        return PlainTextResponse(
            text, self.status, headers={"X-ClickHouse-Exception-Code": str(code)}
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine's loopback.

    >>> is_loopback("127.0.0.2"), is_loopback("0.0.0.0"), is_loopback("[::1]")
    (True, False, True)
    """
    h = host.strip("[]").lower()
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def _hostname(value: str) -> str:
    """The host part of a Host header value (``name:port``, ``[v6]:port``)."""
    try:
        return (urlsplit("//" + value).hostname or "").lower()
    except ValueError:
        return ""


@dataclass(frozen=True)
class Guard:
    """The checks of one server; built from ``api`` settings and the bound address."""

    token: str = ""
    hosts: frozenset[str] = field(default_factory=frozenset)
    check_hosts: bool = True
    max_body_bytes: int = 1 << 20
    read_timeout_s: float = 10.0

    @classmethod
    def for_bind(
        cls,
        bind_host: str,
        token: str = "",
        allowed_hosts: tuple[str, ...] | list[str] = (),
        max_body_bytes: int = 1 << 20,
        read_timeout_s: float = 10.0,
    ) -> Guard:
        """The guard of a server on ``bind_host``; ConfigError if it would be open off loopback.

        Off loopback with no ``allowed_hosts``, any Host is accepted (the token guards it).
        """
        if not is_loopback(bind_host) and not token:
            raise ConfigError(
                f"api.token: required to serve HTTP on {bind_host} (off loopback); "
                "set MONITORING_API__TOKEN or bind to 127.0.0.1"
            )
        names = {n.lower() for n in _LOOPBACK_NAMES} | {h.lower() for h in allowed_hosts}
        names.add(bind_host.strip("[]").lower())
        check = is_loopback(bind_host) or bool(allowed_hosts)
        return cls(token, frozenset(names), check, max_body_bytes, read_timeout_s)

    @classmethod
    def from_settings(cls, api: ApiSettings, bind_host: str) -> Guard:
        """:meth:`for_bind` with the ``api`` section's token, hosts and limits."""
        return cls.for_bind(
            bind_host,
            api.token.get_secret_value(),
            api.allowed_hosts,
            api.max_body_bytes,
            api.read_timeout.total_seconds(),
        )

    def host_allowed(self, value: str) -> bool:
        """Whether a Host (or Origin's host) names this server."""
        if not self.check_hosts:
            return True
        h = _hostname(value)
        return h in self.hosts or (h != "" and is_loopback(h))

    def check(self, request: Request) -> None:
        """Raise Refused unless the request's host, origin and credentials pass."""
        ch = request.url.path in CLICKHOUSE_PATHS
        if not self.host_allowed(request.headers.get("host", "")):
            raise Refused(421, "Host header does not name this server", 497 if ch else None)
        origin = request.headers.get("origin")
        if origin is not None and (origin == "null" or not self.host_allowed(_origin_host(origin))):
            raise Refused(403, "cross-origin requests are not allowed", 497 if ch else None)
        if self.token and request.url.path not in OPEN_PATHS:
            given = credential(request)
            if given is None:
                if "password" in request.query_params:
                    raise Refused(
                        401,
                        "the token is not accepted in the URL: send it as the basic auth "
                        "password or X-ClickHouse-Key",
                        194 if ch else None,
                    )
                raise Refused(
                    401,
                    "missing token: send Authorization: Bearer, basic auth or X-ClickHouse-Key",
                    194 if ch else None,
                )
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                # ClickHouse answers a wrong password 403; the JSON API keeps 401.
                raise Refused(403 if ch else 401, "wrong token", 516 if ch else None)

    async def body(self, request: Request, json: bool = True) -> bytes:
        """The request body within the size and time limits (Refused otherwise)."""
        if json:
            ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if ctype != "application/json":
                raise Refused(415, "Content-Type must be application/json")
        length = request.headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):  # "²".isdigit() too
                raise Refused(400, "Content-Length must be a non-negative number")
            if int(length) > self.max_body_bytes:
                raise Refused(413, f"request body over {self.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.read_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise Refused(413, f"request body over {self.max_body_bytes} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise Refused(408, "request body not received in time") from None
        return b"".join(chunks)


def credential(request: Request) -> str | None:
    """The secret a request carries: a bearer token, a basic auth password or
    ``X-ClickHouse-Key``; None when it carries none.

    >>> from starlette.requests import Request
    >>> def req(*headers: tuple[bytes, bytes]) -> Request:
    ...     return Request({"type": "http", "headers": list(headers), "query_string": b""})
    >>> credential(req((b"authorization", b"Basic " + base64.b64encode(b"default:s3"))))
    's3'
    >>> credential(req((b"x-clickhouse-user", b"u"), (b"x-clickhouse-key", b"k")))
    'k'
    >>> credential(req((b"authorization", b"Bearer t")))
    't'
    >>> credential(req()) is None
    True
    """
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return request.headers.get("x-clickhouse-key")


def _origin_host(origin: str) -> str:
    try:
        return urlsplit(origin).netloc
    except ValueError:
        return ""
