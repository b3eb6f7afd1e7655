"""Run ids: random UUIDs (version 4) as 32 hex digits, made for a whole enqueue at once."""

from __future__ import annotations

import os

_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))  # the version and variant bits
_SET = (0x4000 << 64) | (0x8000 << 48)  # version 4, RFC 4122's variant


def new_run_ids(n: int) -> list[str]:
    """`n` ids, each what `uuid.uuid4().hex` gives, from one read of the system's randomness (`uuid4` reads it and
    builds a UUID object per id: ~3 µs an id of a bulk enqueue, against ~0.8)."""
    raw = os.urandom(16 * n)
    return ["%032x" % (int.from_bytes(raw[i : i + 16], "big") & _CLEAR | _SET) for i in range(0, 16 * n, 16)]
