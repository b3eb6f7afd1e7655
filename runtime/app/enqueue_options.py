"""What an enqueue's options are checked against (`delay`, `at`, `deadline`; how long a key is held), and the
Lua scripts and message label by which its `guard` and `key`/`unique` options take effect atomically in Redis."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from runtime.errors import ArgumentsError

MAX_DELAY = 366 * 86400  # seconds: a year (and a day); later runs belong in a schedule or a database

# XADD (or ZADD for a delayed run) the messages, at most once per guard key: a retried scheduler fire,
# or a second scheduler, finds the guard and queues nothing. KEYS: stream, delayed[, guard];
# ARGV: due time (0 = now), guard ttl ms, messages...
_GUARDED_KICK = """
if #KEYS > 2 and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 0 end
local due = tonumber(ARGV[1])
for i = 3, #ARGV do
  if due > 0 then redis.call('ZADD', KEYS[2], due, ARGV[i]) else redis.call('XADD', KEYS[1], '*', 'data', ARGV[i]) end
end
return #ARGV - 2
"""

# A unique enqueue: KEYS: stream, delayed, unique key; ARGV: due time (0 = now), ttl ms, run id, message.
# Returns the id of the run that holds the key already (nothing queued), or false (queued now).
_UNIQUE_KICK = """
local holder = redis.call('GET', KEYS[3])
if holder then return holder end
redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2])
local due = tonumber(ARGV[1])
if due > 0 then redis.call('ZADD', KEYS[2], due, ARGV[4]) else redis.call('XADD', KEYS[1], '*', 'data', ARGV[4]) end
return false
"""
KEY_HOLD = 7 * 86400.0  # an idempotency key without a `unique` window is held this long at most


def check_at(at: object) -> float:
    """`at` (a datetime; naive means UTC) as seconds from now (0 when it is past)."""
    if not isinstance(at, datetime):
        raise ArgumentsError(f"at: must be a datetime (naive means UTC), not {type(at).__name__} {str(at)[:40]!r}")
    when = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    return check_delay(max(0.0, when.timestamp() - time.time()))


def check_deadline(deadline: object, now: float) -> float | None:
    """`deadline` (seconds from now, or a datetime; naive means UTC) as a Unix time."""
    if deadline is None:
        return None
    if isinstance(deadline, datetime):
        when = deadline if deadline.tzinfo is not None else deadline.replace(tzinfo=UTC)
        return when.timestamp()
    if isinstance(deadline, bool) or not isinstance(deadline, int | float) or not 0 < deadline <= MAX_DELAY:
        raise ArgumentsError(f"deadline: must be seconds from now or a datetime, not {deadline!r:.40}")
    if isinstance(deadline, float) and not math.isfinite(deadline):
        raise ArgumentsError(f"deadline: must be a finite number of seconds, not {deadline}")
    return now + float(deadline)


def check_delay(delay: object) -> float:
    """`delay` as seconds, or an ArgumentsError naming it."""
    if delay is None:
        return 0.0
    if isinstance(delay, bool) or not isinstance(delay, int | float):
        raise ArgumentsError(f"delay: must be a number of seconds, not {type(delay).__name__} {str(delay)[:40]!r}")
    if (isinstance(delay, float) and not math.isfinite(delay)) or not 0 <= delay <= MAX_DELAY:
        shown = str(delay) if isinstance(delay, float) or abs(delay) < 10**20 else f"{str(delay)[:12]}..."
        raise ArgumentsError(f"delay: must be from 0 to {MAX_DELAY} seconds (a year), not {shown}")
    return float(delay)


def _with_label(message: bytes, name: str, value: Any) -> bytes:
    data = orjson.loads(message)
    data["labels"][name] = value
    return orjson.dumps(data)


def check_size(name: str, messages: list[bytes], arguments: list[dict[str, Any]], limit: int) -> None:
    """An ArgumentsError naming the largest argument of a message over `limit` bytes (MAX_ARGUMENTS_SIZE)."""
    for message, kwargs in zip(messages, arguments, strict=True):
        if len(message) > limit:
            sizes = {key: len(orjson.dumps(value)) for key, value in kwargs.items()}
            largest = max(sizes, key=lambda key: sizes[key]) if sizes else "arguments"
            raise ArgumentsError(
                f"bad arguments for '{name}': {largest}: too large ({sizes.get(largest, len(message))} bytes "
                f"as JSON; all arguments may take MAX_ARGUMENTS_SIZE={limit} bytes); pass a reference "
                "(an id, a path) instead of the data"
            )
