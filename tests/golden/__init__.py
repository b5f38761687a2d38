"""Golden state snapshots: what each agent's checkpoint wrote, one file per state version.

``<agent>/v<N>.bin`` (or ``v<N>_<variant>.bin``) holds a state table (the latest
record per key of one partition of the agent's state topic, as the agent reads it back
at restore) written by the code of version ``N``, generated once by ``make.py`` from a
clean export of that code and never regenerated: a test restores it with today's code
and checks what the restored state does. A new state version adds a file; an old file
goes only with its version's support.

File layout: records one after the other, each ``u32 key length, key, u32 value
length, value`` (big-endian), in the order they were written.
"""

from __future__ import annotations

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent
_LEN = struct.Struct(">I")


def path(agent: str, version: int, variant: str = "") -> Path:
    """The file of ``agent``'s state version ``version`` (``v1.bin``), or of a
    ``variant`` of its layout (``v1_refused.bin``: an optional part present)."""
    return HERE / agent / f"v{version}{'_' + variant if variant else ''}.bin"


def dump_table(table: dict[bytes, bytes]) -> bytes:
    """The file bytes of a state table."""
    return b"".join(_LEN.pack(len(k)) + k + _LEN.pack(len(v)) + v for k, v in table.items())


def load_table(data: bytes) -> dict[bytes, bytes]:
    """Inverse of ``dump_table``."""
    table: dict[bytes, bytes] = {}
    i = 0
    while i < len(data):
        (n,) = _LEN.unpack_from(data, i)
        key = data[i + 4 : i + 4 + n]
        i += 4 + n
        (n,) = _LEN.unpack_from(data, i)
        table[key] = data[i + 4 : i + 4 + n]
        i += 4 + n
    return table


def read(agent: str, version: int, variant: str = "") -> dict[bytes, bytes]:
    """The golden state table of ``agent``'s state version ``version`` (``variant``)."""
    return load_table(path(agent, version, variant).read_bytes())
