"""Open a clickhouse-connect client from the storage DSN (embedded chDB or a server).

``chdb:///.data/chdb`` (the default) and ``chdb:///./dir`` name a directory relative
to the working directory; ``chdb:///abs/dir`` an absolute one; ``http(s)://host:port``
a ClickHouse server. chDB lets one process at a time hold a directory, so a second
process gets :class:`StoreLocked` (the store serves queries over HTTP for that case).
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from monitoring.config import QueryLimits

_opened: set[Path] = set()  # chDB directories this process has opened


class StoreLocked(RuntimeError):
    """The chDB directory is held by another process (normally the running store)."""


def chdb_path(dsn: str) -> Path | None:
    """The chDB data directory of a ``chdb://`` DSN; None for a server or in-memory DSN.

    >>> str(chdb_path("chdb:///.data/chdb"))
    '.data/chdb'
    >>> str(chdb_path("chdb:///var/lib/chdb"))
    '/var/lib/chdb'
    """
    if not dsn.startswith("chdb://"):
        return None
    rest = dsn[len("chdb://") :].split("?", 1)[0]
    if rest in ("", "memory", ":memory:") or rest.startswith("memory/"):
        return None  # in-memory engine: nothing on disk, nothing to lock
    if rest.startswith("/."):
        return Path(rest[1:])  # /.data/x and /./x are relative to the working directory
    return Path(rest)


def connect(dsn: str, **settings: Any) -> Client:
    """A client for ``dsn``; raises StoreLocked if another process holds the chDB dir."""
    path = chdb_path(dsn)
    if path is None:
        return clickhouse_connect.get_client(dsn=dsn, settings=settings or None)
    path.mkdir(parents=True, exist_ok=True)
    resolved = path.resolve()
    if resolved not in _opened and chdb_locked(path):
        raise StoreLocked(f"{path} is held by another process (chDB allows one at a time)")
    try:
        client = clickhouse_connect.get_client(
            interface="chdb", path=str(resolved), settings=settings or None
        )
    except Exception as e:
        if "Error initializing EmbeddedServer" in str(e):
            raise StoreLocked(f"{path} is held by another process: {e}") from e
        raise
    _opened.add(resolved)
    return client


def chdb_locked(path: Path) -> bool:
    """True if another process holds the chDB directory (its ``status`` file lock).

    ClickHouse takes a BSD ``flock`` on that file; probing it from the process that
    holds the engine would report True, so :func:`connect` skips the probe there.
    """
    status = path / "status"
    if not status.exists():
        return False
    with status.open("rb") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def with_receive_timeout(dsn: str, timeout_s: int) -> str:
    """``dsn`` with ``send_receive_timeout`` for an HTTP server (unless it sets one);
    clickhouse-connect takes a DSN's query parameters as client options (its default
    is 300 s, as long as a consumer's max.poll.interval.ms). chDB runs in-process and
    has no such timeout.

    >>> with_receive_timeout("http://u:p@ch:8123/db", 35)
    'http://u:p@ch:8123/db?send_receive_timeout=35'
    >>> with_receive_timeout("chdb:///.data/chdb", 35)
    'chdb:///.data/chdb'
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https"):
        return dsn
    query = parse_qsl(parts.query, keep_blank_values=True)
    if any(k == "send_receive_timeout" for k, _ in query):
        return dsn
    query.append(("send_receive_timeout", str(timeout_s)))
    return urlunsplit(parts._replace(query=urlencode(query)))


QUERY_TIMEOUT_MARGIN_S = 5  # the engine's answer after max_execution_time, the network


def read_only_timeout_s(limits: QueryLimits) -> int:
    """How long a client waits for a user's query: the engine stops it after
    ``limits.timeout`` (``max_execution_time``), plus a margin for its answer.

    >>> read_only_timeout_s(QueryLimits())
    35
    """
    return max(1, int(limits.timeout.total_seconds())) + QUERY_TIMEOUT_MARGIN_S


def connect_read_only(dsn: str, limits: QueryLimits | None = None) -> Client:
    """A client for users' queries, which gives up on a server's answer after
    ``read_only_timeout_s(limits)`` (not clickhouse-connect's 300 s).

    Read-only is per statement: :class:`~monitoring.sinks.clickhouse.read_only.
    ReadOnlyQueries` runs each with the query limits and then ``readonly=1`` (a handle
    opened with ``readonly`` set could not apply the limits). On a server, give
    ``storage.query_dsn`` a read-only user as well.
    """
    return connect(with_receive_timeout(dsn, read_only_timeout_s(limits or QueryLimits())))
