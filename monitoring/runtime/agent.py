"""What an agent supplies to the runtime: its pure parts, and nothing that does I/O.

An agent is a ``StreamAgent``: it restores a partition's state from a snapshot table,
handles one message at a time (asking for records through an ``Emit``), snapshots the
changed state, and may react when a partition has been idle. The runtime
(``runtime.driver``) owns everything else once: consumption, the checkpoint-then-ack
protocol, assignment and revocation, timers, dead letters, self-metrics and health.

>>> class Count(StreamAgent[list[int]]):
...     name = "count"
...     def __init__(self):
...         self.sources, self.state_topic = ("in",), "count.state"
...     def restore(self, partition, table):
...         return [int(table.get(b"n", b"0"))]
...     def snapshot(self, state):
...         return [(b"n", str(state[0]).encode())]
...     def handle(self, msg, state, out):
...         state[0] += 1
...         out.send("out", None, str(state[0]).encode())
...         return 1
>>> out = Emit()
>>> Count().handle(None, [41], out), out.sends[0].records
(1, [(None, b'42')])
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, NamedTuple, Protocol, TypeVar

from monitoring.runtime.outputs import Headers

S = TypeVar("S")
Records = list[tuple[bytes, bytes | None]]
"""A snapshot: changelog records (``None`` deletes a key), in write order."""


class Record(Protocol):
    """A consumed message, as the runtime hands it to ``StreamAgent.handle`` (Faust's
    ``Message``, or ``runtime.memory.MemoryMessage`` in tests)."""

    topic: str
    partition: int
    offset: int
    key: Any
    value: Any
    timestamp: float  # seconds since the epoch (the Kafka record's timestamp)


class Send(NamedTuple):
    """Records for one topic, in order; ``last_headers`` go on the last one."""

    topic: str
    records: Sequence[tuple[bytes | None, bytes | None]]
    partition: int | None = None
    last_headers: Headers | None = None


class DeadLetter(NamedTuple):
    """The current message goes to the dead-letter topic with why (and, for a batch,
    the indices of the rejected items); or, with ``value``, that value in its stead
    (one bad line of a batch, say), with ``headers`` added."""

    reason: str
    detail: str
    rejected: list[int] | None = None
    value: bytes | None = None
    headers: Headers | None = None


class Emit:
    """What one call of an agent's pure part asks the runtime to publish."""

    __slots__ = ("dead", "replayed", "sends")

    def __init__(self) -> None:
        self.sends: list[Send] = []
        self.dead: list[DeadLetter] = []
        self.replayed = False

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> None:
        """One record (keyed: Java's murmur2 placement unless ``partition`` is given)."""
        self.sends.append(Send(topic, [(key, value)], partition, headers))

    def send_many(
        self,
        topic: str,
        records: Sequence[tuple[bytes | None, bytes | None]],
        partition: int | None = None,
        last_headers: Headers | None = None,
    ) -> None:
        """A run of records for one topic, in order."""
        if records:
            self.sends.append(Send(topic, records, partition, last_headers))

    def dead_letter(self, reason: str, detail: str, rejected: list[int] | None = None) -> None:
        """Send the message being handled to the dead-letter topic, with the reason."""
        self.dead.append(DeadLetter(reason, detail, rejected))

    def dead_letter_part(self, reason: str, detail: str, value: bytes, headers: Headers) -> None:
        """Send ``value`` (a part of the message being handled) to the dead-letter topic,
        with the message's key and source headers, the reason, and ``headers``."""
        self.dead.append(DeadLetter(reason, detail, None, value, headers))

    def skip_replayed(self) -> None:
        """The message was already in the restored state (counted, nothing published)."""
        self.replayed = True


class StreamAgent(ABC, Generic[S]):
    """An agent's pure parts: state per source partition, no I/O.

    ``sources`` are the topic names it reads (co-partitioned: partition ``p`` of each
    feeds the state of partition ``p``); its state lives in ``state_topic``, partition
    ``p``. ``handle`` may raise: the runtime dead-letters that message with reason
    ``processing-error`` and goes on.
    """

    name: ClassVar[str]
    sources: tuple[str, ...]
    state_topic: str
    checkpoint_interval_s: float = 10.0
    idle_timeout_s: float | None = None  # None: the agent never reacts to idleness
    clock: Callable[[], float] = staticmethod(time.monotonic)  # the runtime's (seconds)

    @abstractmethod
    def restore(self, partition: int, table: dict[bytes, bytes]) -> S:
        """The state of ``partition`` from its changelog table (empty: a fresh start).
        May raise on a table it cannot read: the runtime then starts it empty."""

    @abstractmethod
    def snapshot(self, state: S) -> Records | None:
        """Changelog records of what changed since the last snapshot (None: nothing)."""

    @abstractmethod
    def handle(self, msg: Record, state: S, out: Emit) -> int:
        """Apply one message; the number of items it held (samples, points, lines)."""

    def next_offset(self, state: S, topic: str) -> int | None:
        """The offset after the last message of ``topic`` in ``state`` (restored ones
        included), if the state knows it: a restored partition with nothing left to
        read is then idle at once. None: only what this process handled counts."""
        return None

    def wants_idle(self, state: S) -> bool:
        """True if ``idle`` would have something to do for this state."""
        return False

    def idle(self, partition: int, state: S, quiet: frozenset[str], out: Emit) -> bool:
        """``quiet`` source topics of ``partition`` have had no message for
        ``idle_timeout_s`` and nothing is waiting in them. True: checkpoint at once."""
        return False

    def tick(self, partition: int, state: S, out: Emit) -> None:
        """Called for every partition at the idle timer (``idle_timeout_s`` / 4, at most
        every second): for finer idleness than the partition's, on ``clock``."""

    def release(self, partition: int, state: S) -> None:
        """``partition`` was revoked (checkpointed first; its next owner restores it):
        let go of anything ``state`` holds outside itself (a worker-wide budget)."""

    def checkpointed(self, state: S) -> None:
        """The state's last snapshot is on the broker."""

    def observe(self, states: Mapping[int, S]) -> None:
        """Update the agent's own gauges (called at each checkpoint tick)."""

    def health(self, states: Mapping[int, S]) -> dict[str, Any]:
        """The agent's own fields for ``GET /healthz``."""
        return {}
