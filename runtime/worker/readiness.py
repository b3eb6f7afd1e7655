"""A worker's /health (ready) and /health/live answers (runtime/ops/health.py's HealthServer serves them)."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from runtime.ops.health import Heartbeat, dependencies


class Worker(Protocol):
    """What the answers read of a worker (runtime/worker/worker.py's Worker, which imports this module)."""

    runtime: Any
    broker: Any
    commits: Any
    attempts: Any
    heartbeat: Heartbeat
    stopping: asyncio.Event
    running: dict[str, Any]
    held: dict[str, Any]


async def live(worker: Worker) -> tuple[int, dict[str, Any]]:
    """Alive while its event loop beats: a stuck loop is worth a restart, a Redis outage is not."""
    ok = worker.heartbeat.fresh()
    return (200 if ok else 503), {"status": "ok" if ok else "stuck", "consumer": worker.broker.consumer}


async def ready(worker: Worker) -> tuple[int, dict[str, Any]]:
    """Ready while its loop beats, its acks are not stalled, it is not stopping, and Redis and the database
    answer (each named in the body, "ok" or why not)."""
    deps = await dependencies(worker.runtime)
    stalled = worker.commits.stalled()
    ok = worker.heartbeat.fresh() and not stalled and not worker.stopping.is_set() and set(deps.values()) <= {"ok"}
    status = "ok" if ok else ("acks stalled" if stalled else "unavailable")
    body = {
        "status": status,
        "consumer": worker.broker.consumer,
        "running": len(worker.running),
        "held": len(worker.held),
    }
    return (200 if ok else 503), {**body, "done": worker.attempts.done_count, **deps}
