"""Commands to the alert manager, as values that can travel on a Kafka control topic.

Each command is a frozen pydantic model with a ``kind``; ``parse_command`` reads the
JSON (bytes, str or dict) and ``command_to_bytes`` writes it. The id of a new silence
is chosen by whoever sends the command (``new_silence_id()``), so that every replica
and every replay of the topic applies the same silence. ``AlertManager.apply(command,
now_ms)`` takes the record's timestamp as ``now_ms``.

>>> cmd = parse_command(b'{"kind": "acknowledge", "fingerprint": "8eb796a0cf42dedf", '
...                     b'"by": "ann"}')
>>> cmd.kind, cmd.fingerprint, cmd.group_key
('acknowledge', '8eb796a0cf42dedf', None)
>>> parse_command(command_to_bytes(cmd)) == cmd
True
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from monitoring.alerts.silences import (
    MAX_COMMENT_LENGTH,
    MAX_CREATED_BY_LENGTH,
    MAX_ID_LENGTH,
    SilenceSpec,
    check_length,
)


class CommandError(ValueError):
    """A command is malformed or cannot be applied; the message says why."""


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _id_length(v: str) -> str:
    return check_length("id", v, MAX_ID_LENGTH)


class CreateSilence(_Command):
    """Create a silence, or update the one with this id (v2 ``PostableSilence`` body)."""

    kind: Literal["create_silence"] = "create_silence"
    id: str = Field(min_length=1)
    silence: SilenceSpec

    _id_valid = field_validator("id")(_id_length)

    @model_validator(mode="after")
    def _same_id(self) -> CreateSilence:
        if self.silence.id is not None and self.silence.id != self.id:
            raise ValueError(f"silence.id {self.silence.id!r} differs from the command's id")
        return self


class ExpireSilence(_Command):
    """End a silence now (``DELETE /api/v2/silence/{id}``)."""

    kind: Literal["expire_silence"] = "expire_silence"
    id: str = Field(min_length=1)

    _id_valid = field_validator("id")(_id_length)


class Acknowledge(_Command):
    """Acknowledge one alert (``fingerprint``) or a whole group (``group_key``)."""

    kind: Literal["acknowledge"] = "acknowledge"
    fingerprint: str | None = None
    group_key: str | None = None
    by: str = Field(min_length=1)
    comment: str = ""

    @field_validator("by")
    @classmethod
    def _by_length(cls, v: str) -> str:
        return check_length("by", v, MAX_CREATED_BY_LENGTH)

    @field_validator("comment")
    @classmethod
    def _comment_length(cls, v: str) -> str:
        return check_length("comment", v, MAX_COMMENT_LENGTH)

    @model_validator(mode="after")
    def _one_target(self) -> Acknowledge:
        if (self.fingerprint is None) == (self.group_key is None):
            raise ValueError("give exactly one of fingerprint or group_key")
        return self


AnyCommand = CreateSilence | ExpireSilence | Acknowledge
Command = Annotated[AnyCommand, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[AnyCommand] = TypeAdapter(Command)


def parse_command(
    data: bytes | str | dict[str, Any],
) -> CreateSilence | ExpireSilence | Acknowledge:
    """Validate a command; ``CommandError`` naming the bad field otherwise."""
    try:
        if isinstance(data, dict):
            return _ADAPTER.validate_python(data)
        return _ADAPTER.validate_json(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<command>'}: {err['msg']}"
            for err in e.errors()
        )
        raise CommandError(f"invalid command: {problems}") from None


def command_to_bytes(command: AnyCommand) -> bytes:
    """The command as JSON bytes (what ``parse_command`` reads)."""
    return command.model_dump_json(exclude_none=True).encode()


def new_silence_id() -> str:
    """A fresh silence id (a UUID, as Alertmanager uses)."""
    return str(uuid.uuid4())
