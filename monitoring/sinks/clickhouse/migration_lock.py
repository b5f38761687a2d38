"""A lock on the store's migrations, held by one store at a time, kept in ClickHouse.

The lock is a table ``schema_migrations_lock_<N>`` whose comment names its holder.
Creating it (without ``IF NOT EXISTS``) is atomic in ClickHouse: of two stores creating
generation N at once, one gets ``TABLE_ALREADY_EXISTS``. A holder appends ``beat`` rows
(stamped by the server) while it works and a ``release`` row when it is done; the next
holder creates N + 1 and drops the older generations. Generation N + 1 may be created
only by one that saw N released, or N stale: neither a new beat nor a running query of
its holder for ``ttl_s`` of the observer's own clock (every statement run under the lock
carries :attr:`MigrationLock.mark`, so a holder busy copying a large table is alive). A taker
then checks that its generation is the highest, so a store acting on an old view backs
off. A holder checks it still holds the lock before each statement (:meth:`check`).
A waiter stops waiting when its ``stop`` says so (:class:`LockWaitStopped`).
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from monitoring.log import get_logger

log = get_logger("migrations")

PREFIX = "schema_migrations_lock_"
_NAME = re.compile(rf"^{PREFIX}(?P<gen>\d{{1,12}})$", re.ASCII)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")


class LockTimeout(RuntimeError):
    """Another store held the migration lock past the wait deadline."""


class LockWaitStopped(RuntimeError):
    """The store was told to stop while it waited for the migration lock."""


class LockLost(RuntimeError):
    """The lock was taken over (this holder was seen as stale): stop migrating."""


@dataclass(frozen=True)
class Generation:
    """One lock table: its generation and holder."""

    gen: int
    holder: str

    @property
    def table(self) -> str:
        return f"{PREFIX}{self.gen}"


def default_holder() -> str:
    """``host:pid:random``, safe inside an SQL comment and a table comment."""
    return _UNSAFE.sub("_", f"{socket.gethostname()[:64]}:{os.getpid()}:{uuid.uuid4().hex[:8]}")


def generations(client: Client) -> list[Generation]:
    """The lock tables of the current database, lowest generation first."""
    rows = client.query(
        "SELECT name, comment FROM system.tables "
        "WHERE database = currentDatabase() AND startsWith(name, {p:String})",
        parameters={"p": PREFIX},
    ).result_rows
    found = []
    for name, comment in rows:
        m = _NAME.match(str(name))
        if m:
            found.append(Generation(int(m.group("gen")), str(comment)))
    return sorted(found, key=lambda g: g.gen)


class MigrationLock:
    """Take with :meth:`acquire`, give back with :meth:`release`; see the module doc."""

    def __init__(
        self,
        client: Client,
        *,
        ttl_s: float = 60.0,
        poll_s: float = 0.5,
        holder: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not ttl_s > 0 or not poll_s > 0:
            raise ValueError("ttl_s and poll_s must be positive")
        self.client = client
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.holder = _UNSAFE.sub("_", holder) if holder else default_holder()
        self._clock = clock
        self._sleep = sleep
        self.held: Generation | None = None
        self.took_over: Generation | None = None  # the stale lock replaced, if any
        self._last_beat = 0.0
        self._seen: tuple[int, tuple[object, ...]] | None = None  # (gen, state) observed
        self._seen_at = 0.0

    @property
    def mark(self) -> str:
        """An SQL comment naming the holder, put before each statement run under the lock."""
        return f"/* migration-lock:{self.holder} */"

    def acquire(self, wait_s: float, stop: Callable[[], bool] | None = None) -> None:
        """Hold the lock, waiting at most ``wait_s`` for another holder (LockTimeout then)
        and no longer than ``stop()`` is false (LockWaitStopped then)."""
        deadline = self._clock() + wait_s
        while True:
            if stop is not None and stop():
                raise LockWaitStopped("stopped while waiting for the migration lock")
            gens = generations(self.client)
            if not gens:
                if self._create(1):
                    return
                continue
            top = gens[-1]
            why = self._free(top)
            if why is not None and self._create(top.gen + 1):
                if why == "stale":
                    self.took_over = top
                    log.warning(
                        "migration_lock_taken_over", stale_holder=top.holder, generation=top.gen
                    )
                return
            if why is None and self._clock() >= deadline:
                raise LockTimeout(
                    f"the migration lock is held by {top.holder} (generation {top.gen}) "
                    f"after waiting {wait_s:g} s"
                )
            if why is None:
                self._sleep(self.poll_s)

    def _free(self, top: Generation) -> str | None:
        """Why ``top`` may be replaced ("released", "stale"), or None while held."""
        state = self._state(top)
        if state is None:  # dropped meanwhile
            return None
        if state[2]:
            return "released"
        now = self._clock()
        if self._seen is None or self._seen != (top.gen, state):
            self._seen, self._seen_at = (top.gen, state), now
            return None
        if now - self._seen_at < self.ttl_s:
            return None
        if self._running(top.holder):  # alive: its idle time counts from now
            self._seen_at = now
            return None
        return "stale"

    def _state(self, g: Generation) -> tuple[object, ...] | None:
        try:
            rows = self.client.query(
                f"SELECT count(), max(at), countIf(event = 'release') FROM {g.table}"
            ).result_rows
        except Exception as e:
            if "UNKNOWN_TABLE" in str(e) or "Code: 60." in str(e):
                return None
            raise
        count, last, released = rows[0]
        return (int(count), str(last), int(released) > 0)

    def wait_idle(self, stop: Callable[[], bool] | None = None) -> bool:
        """Wait while a statement of this holder runs on the server (a client that gave up
        on its answer does not end it); False if ``stop()`` came first."""
        while self._running(self.holder):
            if stop is not None and stop():
                return False
            self._sleep(self.poll_s)
        return True

    def _running(self, holder: str) -> bool:
        rows = self.client.query(
            "SELECT count() FROM system.processes "
            "WHERE position(query, {m:String}) > 0 AND query_id != queryID()",
            parameters={"m": f"migration-lock:{holder} "},
        ).result_rows
        return int(rows[0][0]) > 0

    def _create(self, gen: int) -> bool:
        g = Generation(gen, self.holder)
        try:
            self.client.command(
                f"CREATE TABLE {g.table} (holder String, event String, "
                "at DateTime64(3, 'UTC') DEFAULT now64(3)) "
                f"ENGINE = MergeTree ORDER BY at COMMENT '{self.holder}'"
            )
        except Exception as e:
            if "TABLE_ALREADY_EXISTS" in str(e) or "Code: 57." in str(e):
                return False
            raise
        gens = generations(self.client)
        if not gens or gens[-1].gen != gen:  # created on an old view: a newer one exists
            self._drop(g)
            return False
        self.held = g
        self._beat()
        for old in gens[:-1]:
            self._drop(old)
        return True

    def _drop(self, g: Generation) -> None:
        self.client.command(f"DROP TABLE IF EXISTS {g.table}")

    def _event(self, event: str) -> None:
        assert self.held is not None
        self.client.insert(
            self.held.table, [[self.holder, event]], column_names=["holder", "event"]
        )

    def _beat(self) -> None:
        self._event("beat")
        self._last_beat = self._clock()

    def check(self) -> None:
        """Raise LockLost unless this holder still holds the lock; beat if one is due."""
        if self.held is None:
            raise LockLost("the migration lock is not held")
        gens = generations(self.client)
        if not gens or gens[-1] != self.held:
            lost, self.held = self.held, None
            raise LockLost(f"migration lock generation {lost.gen} was taken over")
        if self._clock() - self._last_beat >= self.ttl_s / 4:
            self._beat()

    def release(self) -> None:
        """Mark the lock released (the next holder drops its table)."""
        if self.held is None:
            return
        try:
            gens = generations(self.client)
            if gens and gens[-1] == self.held:
                self._event("release")
        finally:
            self.held = None
