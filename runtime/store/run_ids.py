"""Run ids: time-ordered UUIDs (version 7, RFC 9562) as 32 hex digits, made for a whole enqueue at once, so a
batch's rows and index entries land on neighbouring pages of the run store's B-trees, not on a random page each."""

from __future__ import annotations

import os
import threading
import time

_RAND_B = (1 << 62) - 1  # the random bits after the variant
_VARIANT = 1 << 63  # RFC 9562's variant (0b10)
_lock = threading.Lock()
_last = 0  # the last id's milliseconds and counter (48 + 12 bits): ids of this process only ever grow


def new_run_ids(n: int) -> list[str]:
    """`n` ids, strictly increasing within a call and across the calls of a process: Unix milliseconds (48 bits),
    the version, a counter in `rand_a` (12 bits, seeded below 256 each millisecond, carrying into the milliseconds
    when full: RFC 9562 §6.2, method 1), the variant and 62 random bits, from one read of the system's randomness
    (~0.7 µs an id in bulk, ~1.8 for one). The last 8 hex digits are random: they are the short id users see."""
    global _last
    raw = os.urandom(8 * n + 1)
    start = time.time_ns() // 1_000_000 << 12 | raw[-1]
    with _lock:  # enqueues from threads of their own still take distinct, increasing ids
        if start <= _last:  # the same millisecond (or a clock stepped back): count on from the last id
            start = _last + 1
        _last = start + n - 1
    if n == 1:  # a single enqueue: no comprehension to set up
        return [_uuid7(start, int.from_bytes(raw[:8]))]
    return [_uuid7(p, int.from_bytes(raw[j : j + 8])) for p, j in enumerate(range(0, 8 * n, 8), start)]


def _uuid7(stamp: int, random: int) -> str:
    """The id of `stamp` (milliseconds and counter) with `random`'s low 62 bits."""
    return "%032x" % (stamp >> 12 << 80 | (stamp & 0xFFF | 0x7000) << 64 | random & _RAND_B | _VARIANT)
