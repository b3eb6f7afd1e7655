"""Which workers are alive: each worker publishes itself every few seconds into one Redis hash,
`runtime.keys.workers()` (field: the worker's consumer id; value: JSON {name, host, pid, queues, concurrency,
running, running_runs, processed, failed, heartbeat, started}, times as Unix seconds). An entry whose heartbeat
is older than `STALE_AFTER` seconds is a worker that died: readers leave it out (and remove it). A worker that
stops withdraws its entry."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Protocol

from runtime.app.connections import Runtime

STALE_AFTER = 30.0  # seconds without a heartbeat before a worker counts as gone
RUNS_LISTED = 50  # run ids an entry lists at most (`running` counts them all)


class AttemptCounts(Protocol):
    """A worker's counts since it started (runtime/worker/attempts.py)."""

    done_count: int  # attempts that ended here
    failed_count: int  # of which raised: an attempt retried later, and a run's last attempt alike


def info(
    name: str, queues: list[str], started: float, concurrency: int, running_runs: list[str], counts: AttemptCounts
) -> dict[str, Any]:
    """This process's entry: `name` is the worker's consumer id, `running_runs` the runs it executes now;
    `processed` and `failed` count its attempts since `started`, as Flower counts a worker's tasks."""
    return {
        "name": name,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "queues": list(queues),
        "concurrency": concurrency,
        "running": len(running_runs),
        "running_runs": running_runs[:RUNS_LISTED],
        "processed": counts.done_count,
        "failed": counts.failed_count,
        "heartbeat": time.time(),
        "started": started,
    }


async def publish(runtime: Runtime, info: dict[str, Any]) -> None:
    """Write (or refresh) one worker's entry; `info["name"]` is its field, `heartbeat` defaults to now."""
    entry = {**info, "heartbeat": info.get("heartbeat") or time.time()}
    await runtime.broker.redis.hset(runtime.keys.workers(), str(entry["name"]), json.dumps(entry))


async def withdraw(runtime: Runtime, name: str) -> None:
    """Remove a stopping worker's entry at once (a dead one's goes after STALE_AFTER)."""
    await runtime.broker.redis.hdel(runtime.keys.workers(), name)


async def workers(runtime: Runtime, now: float | None = None) -> list[dict[str, Any]]:
    """The live workers, by name; entries older than STALE_AFTER (or unreadable) are dropped from the hash."""
    redis = runtime.broker.redis
    key = runtime.keys.workers()
    now = time.time() if now is None else now
    live: list[dict[str, Any]] = []
    stale: list[Any] = []
    for field, value in (await redis.hgetall(key)).items():
        try:
            entry = json.loads(value)
            fresh = now - float(entry["heartbeat"]) <= STALE_AFTER
        except (ValueError, TypeError, KeyError):
            fresh = False
        if fresh:
            live.append(entry)
        else:
            stale.append(field)
    if stale:
        await redis.hdel(key, *stale)
    return sorted(live, key=lambda entry: str(entry.get("name")))
