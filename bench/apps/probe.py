"""What every benchmarked task does, identically for every system, so the harness can see progress.

The no-op task calls `record_done`: one Lua call that INCRs a counter and stamps the first and the
latest completion time (the worker's clock, `time.time()`), so "done" and the timing window are read
the same way for every system. The latency task calls `record_latency`: start time minus the enqueue
timestamp it was given, pushed to a list. Keys are prefixed `probe:` so they never meet an app's keys.
"""

from __future__ import annotations

import os
import time
from typing import Any

DONE = "probe:done"
FIRST = "probe:first"
LAST = "probe:last"
LATENCY = "probe:latency"

_RECORD_DONE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('SET', KEYS[2], ARGV[1]) end
redis.call('SET', KEYS[3], ARGV[1])
return n
"""

_clients: dict[str, Any] = {}


def redis_url() -> str:
    return os.environ["REDIS_URL"]


def _async_script() -> Any:
    if "async" not in _clients:
        import redis.asyncio as aioredis

        client = aioredis.from_url(redis_url())
        _clients["async"] = client
        _clients["async_script"] = client.register_script(_RECORD_DONE)
    return _clients


def _sync_clients() -> Any:
    if "sync" not in _clients:
        import redis

        client = redis.Redis.from_url(redis_url())
        _clients["sync"] = client
        _clients["sync_script"] = client.register_script(_RECORD_DONE)
    return _clients


def client() -> Any:
    """The async Redis client the probe uses, for a task's own stamps."""
    return _async_script()["async"]


async def record_done() -> None:
    c = _async_script()
    await c["async_script"](keys=[DONE, FIRST, LAST], args=[repr(time.time())])


async def record_latency(enqueued_at: float) -> None:
    started = time.time()
    await _async_script()["async"].rpush(LATENCY, repr(started - enqueued_at))


def record_done_sync() -> None:
    c = _sync_clients()
    c["sync_script"](keys=[DONE, FIRST, LAST], args=[repr(time.time())])


def record_latency_sync(enqueued_at: float) -> None:
    started = time.time()
    _sync_clients()["sync"].rpush(LATENCY, repr(started - enqueued_at))
