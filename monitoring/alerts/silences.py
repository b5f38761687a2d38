"""Silences: matchers over a time range that mute the alerts they match.

``SilenceSpec`` is Alertmanager's v2 API ``PostableSilence`` (``matchers: [{name, value,
isRegex, isEqual}]``, ``startsAt``, ``endsAt``, ``createdBy``, ``comment``) so the HTTP
API and the CLI can pass it through unchanged; ``Silences`` holds them (create or
update, list, expire, garbage-collect), with Alertmanager's states: ``pending`` before
``startsAt``, ``active`` until ``endsAt``, then ``expired``.

>>> spec = SilenceSpec.model_validate({"matchers": [{"name": "job", "value": "db.*",
...     "isRegex": True}], "startsAt": "1970-01-01T00:00:10Z",
...     "endsAt": "1970-01-01T01:00:00Z", "createdBy": "ann", "comment": "maintenance"})
>>> s = spec.to_silence("s1", now_ms=0)
>>> (s.state(5_000), s.state(10_000), s.state(3_600_000))
('pending', 'active', 'expired')
>>> s.matches({"job": "db-main"}, now_ms=20_000)
True
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from monitoring.alerts.matchers import Matcher, MatcherError, matches_all
from monitoring.alerts.model import rfc3339

SilenceState = Literal["pending", "active", "expired"]
DEFAULT_RETENTION_MS = 120 * 3_600_000  # Alertmanager's --data.retention
MAX_MATCHERS = 64  # matchers per silence (Alertmanager's examples use one to five)
MAX_MATCHER_LENGTH = 1024  # characters of a matcher's name or value (pattern)
MAX_COMMENT_LENGTH = 4096  # characters: room for a paragraph and a few ticket links
MAX_CREATED_BY_LENGTH = 256  # characters: a user name or an e-mail address
MAX_ID_LENGTH = 256  # characters of a silence id (ours are 36-character UUIDs)
# active and pending silences at once (Alertmanager's --silences.max-silences); as many
# expired ones are kept (the oldest forgotten first) until their retention ends
DEFAULT_MAX_SILENCES = 1000


class SilenceError(ValueError):
    """A silence cannot be created, updated or expired; the message says why."""


class SilenceLimitError(SilenceError):
    """A silence exceeds one of the bounds above; the message names it."""


def check_length(what: str, value: str, limit: int) -> str:
    """``value``, or ``SilenceLimitError`` when it is longer than ``limit``."""
    if len(value) > limit:
        raise SilenceLimitError(f"{what} has {len(value)} characters, at most {limit} allowed")
    return value


@dataclass(frozen=True)
class Silence:
    """One silence; times in milliseconds since the epoch."""

    id: str
    matchers: tuple[Matcher, ...]
    starts_at_ms: int
    ends_at_ms: int
    created_by: str
    comment: str
    updated_at_ms: int

    def state(self, now_ms: int) -> SilenceState:
        """``pending``, ``active`` or ``expired`` at ``now_ms``."""
        if now_ms < self.starts_at_ms:
            return "pending"
        return "active" if now_ms < self.ends_at_ms else "expired"

    def matches(self, labels: Mapping[str, str], now_ms: int) -> bool:
        """Whether this silence is active and mutes an alert with these labels."""
        return self.state(now_ms) == "active" and matches_all(self.matchers, labels)

    def to_api(self, now_ms: int) -> dict[str, Any]:
        """Alertmanager's v2 ``GettableSilence``."""
        return {
            "id": self.id,
            "matchers": [m.to_api() for m in self.matchers],
            "startsAt": rfc3339(self.starts_at_ms),
            "endsAt": rfc3339(self.ends_at_ms),
            "updatedAt": rfc3339(self.updated_at_ms),
            "createdBy": self.created_by,
            "comment": self.comment,
            "status": {"state": self.state(now_ms)},
        }

    def to_json(self) -> dict[str, Any]:
        """Snapshot form (integers in milliseconds)."""
        return {
            "id": self.id,
            "matchers": [m.to_api() for m in self.matchers],
            "starts_at_ms": self.starts_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "created_by": self.created_by,
            "comment": self.comment,
            "updated_at_ms": self.updated_at_ms,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Silence:
        """Inverse of ``to_json``."""
        return cls(
            id=obj["id"],
            matchers=tuple(Matcher.from_api(m) for m in obj["matchers"]),
            starts_at_ms=obj["starts_at_ms"],
            ends_at_ms=obj["ends_at_ms"],
            created_by=obj["created_by"],
            comment=obj["comment"],
            updated_at_ms=obj["updated_at_ms"],
        )


def _epoch_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


class ApiMatcher(BaseModel):
    """``{name, value, isRegex, isEqual}`` of the v2 API."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    value: str
    isRegex: bool = False
    isEqual: bool = True

    @field_validator("name", "value")
    @classmethod
    def _length(cls, v: str, info: ValidationInfo) -> str:
        return check_length(f"matcher {info.field_name}", v, MAX_MATCHER_LENGTH)

    def to_matcher(self) -> Matcher:
        """The matcher (regexes are checked here)."""
        return Matcher.from_api(self.model_dump())


class SilenceSpec(BaseModel):
    """Alertmanager's v2 ``PostableSilence`` (``id`` set to update an existing silence)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None
    matchers: tuple[ApiMatcher, ...] = Field(min_length=1)
    startsAt: datetime
    endsAt: datetime
    createdBy: str = Field(min_length=1)
    comment: str = Field(min_length=1)

    @field_validator("id")
    @classmethod
    def _id_length(cls, v: str | None) -> str | None:
        return v if v is None else check_length("id", v, MAX_ID_LENGTH)

    @field_validator("createdBy")
    @classmethod
    def _created_by_length(cls, v: str) -> str:
        return check_length("createdBy", v, MAX_CREATED_BY_LENGTH)

    @field_validator("comment")
    @classmethod
    def _comment_length(cls, v: str) -> str:
        return check_length("comment", v, MAX_COMMENT_LENGTH)

    @field_validator("matchers", mode="before")
    @classmethod
    def _matchers_count(cls, v: Any) -> Any:
        if isinstance(v, list | tuple) and len(v) > MAX_MATCHERS:
            raise SilenceLimitError(f"{len(v)} matchers, at most {MAX_MATCHERS} allowed")
        return v

    @field_validator("matchers")
    @classmethod
    def _matchers_valid(cls, v: tuple[ApiMatcher, ...]) -> tuple[ApiMatcher, ...]:
        ms = [m.to_matcher() for m in v]
        if all(m.matches({}) for m in ms):
            raise ValueError("at least one matcher must not match the empty string")
        return v

    @model_validator(mode="after")
    def _range_valid(self) -> SilenceSpec:
        if self.endsAt <= self.startsAt:
            raise ValueError("endsAt must be after startsAt")
        return self

    def to_silence(self, silence_id: str, now_ms: int) -> Silence:
        """The silence; a start in the past becomes ``now_ms`` as Alertmanager does."""
        ends = _epoch_ms(self.endsAt)
        if ends <= now_ms:
            raise SilenceError(f"silence {silence_id}: endsAt {rfc3339(ends)} is in the past")
        return Silence(
            id=silence_id,
            matchers=tuple(m.to_matcher() for m in self.matchers),
            starts_at_ms=max(_epoch_ms(self.startsAt), now_ms),
            ends_at_ms=ends,
            created_by=self.createdBy,
            comment=self.comment,
            updated_at_ms=now_ms,
        )


@dataclass(frozen=True)
class ActiveSilences:
    """Silences active at one moment."""

    silences: tuple[Silence, ...]

    def silenced_by(self, labels: Mapping[str, str]) -> builtins.list[str]:
        """Ids of the silences that mute these labels, sorted."""
        return sorted(s.id for s in self.silences if matches_all(s.matchers, labels))


class Silences:
    """The set of silences by id: create/update, list, expire, mute checks, GC.

    At most ``max_silences`` are active or pending at once (a new one beyond is refused
    with ``SilenceLimitError``; updating one is not a new one), and at most as many
    expired ones are kept, the earliest ended forgotten first.
    """

    def __init__(
        self,
        silences: Mapping[str, Silence] | None = None,
        max_silences: int = DEFAULT_MAX_SILENCES,
    ) -> None:
        self._by_id: dict[str, Silence] = dict(silences or {})
        self.max_silences = max_silences
        self.dropped: builtins.list[tuple[str, str]] = []  # (id, why): see from_json

    def check_room(self, silence_id: str, now_ms: int) -> None:
        """``SilenceLimitError`` if creating ``silence_id`` would pass ``max_silences``."""
        old = self._by_id.get(silence_id)
        if old is not None and old.state(now_ms) != "expired":
            return  # an update
        live = sum(1 for s in self._by_id.values() if s.state(now_ms) != "expired")
        if live >= self.max_silences:
            raise SilenceLimitError(
                f"{live} silences are active or pending, at most {self.max_silences} "
                "(notifier.max_silences): expire some first"
            )

    def upsert(self, silence: Silence, now_ms: int) -> Silence:
        """Add a silence, or replace the one with its id unless that one has expired."""
        old = self._by_id.get(silence.id)
        if old is not None and old.state(now_ms) == "expired":
            raise SilenceError(f"silence {silence.id} has expired and cannot be updated")
        self.check_room(silence.id, now_ms)
        self._by_id[silence.id] = silence
        return silence

    def _trim_expired(self, now_ms: int) -> None:
        """Forget the earliest ended expired silences beyond ``max_silences``."""
        expired = [s for s in self._by_id.values() if s.state(now_ms) == "expired"]
        if len(expired) > self.max_silences:
            expired.sort(key=lambda s: (s.ends_at_ms, s.id))
            for s in expired[: len(expired) - self.max_silences]:
                del self._by_id[s.id]

    def expire(self, silence_id: str, now_ms: int) -> Silence:
        """End a silence now (a pending one never starts); error if unknown or expired."""
        old = self._by_id.get(silence_id)
        if old is None:
            raise SilenceError(f"silence {silence_id} not found")
        state = old.state(now_ms)
        if state == "expired":
            raise SilenceError(f"silence {silence_id} has already expired")
        starts = now_ms if state == "pending" else old.starts_at_ms
        new = replace(old, starts_at_ms=starts, ends_at_ms=now_ms, updated_at_ms=now_ms)
        self._by_id[silence_id] = new
        self._trim_expired(now_ms)
        return new

    def get(self, silence_id: str) -> Silence | None:
        """The silence with this id, or None."""
        return self._by_id.get(silence_id)

    def list(self, now_ms: int, state: SilenceState | None = None) -> builtins.list[Silence]:
        """Silences (optionally only those in ``state``), ordered by start then id."""
        out = [s for s in self._by_id.values() if state is None or s.state(now_ms) == state]
        return sorted(out, key=lambda s: (s.starts_at_ms, s.id))

    def silenced_by(self, labels: Mapping[str, str], now_ms: int) -> builtins.list[str]:
        """Ids of the active silences that mute these labels, sorted."""
        return self.active_at(now_ms).silenced_by(labels)

    def active_at(self, now_ms: int) -> ActiveSilences:
        """The silences active at ``now_ms``, for checking many alerts at one moment."""
        return ActiveSilences(tuple(s for s in self._by_id.values() if s.state(now_ms) == "active"))

    def gc(self, now_ms: int, retention_ms: int = DEFAULT_RETENTION_MS) -> int:
        """Forget silences expired for longer than ``retention_ms``; how many went."""
        old = [i for i, s in self._by_id.items() if s.ends_at_ms + retention_ms <= now_ms]
        for i in old:
            del self._by_id[i]
        return len(old)

    def to_json(self) -> builtins.list[dict[str, Any]]:
        """Snapshot form, sorted by id."""
        return [self._by_id[i].to_json() for i in sorted(self._by_id)]

    @classmethod
    def from_json(
        cls, items: builtins.list[dict[str, Any]], max_silences: int = DEFAULT_MAX_SILENCES
    ) -> Silences:
        """Inverse of ``to_json``.

        A silence whose matchers no longer compile (a pattern an older version took,
        such as a backreference, which RE2 refuses) is left out, with its id and the
        reason in ``dropped``, rather than failing the whole restore. Silences over a
        lowered ``max_silences`` are all kept: only new ones are refused.
        """
        by_id: dict[str, Silence] = {}
        dropped: builtins.list[tuple[str, str]] = []
        for obj in items:
            try:
                silence = Silence.from_json(obj)
            except MatcherError as e:
                dropped.append((str(obj.get("id")), str(e)))
                continue
            by_id[silence.id] = silence
        out = cls(by_id, max_silences)
        out.dropped = dropped
        return out
