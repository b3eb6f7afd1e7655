"""What the Queues and Workers views show beyond the operations (runtime/ops): each queue's weight and the
age of its oldest waiting task, as Asynqmon shows queue latency; and the runs each worker holds now, as
Flower lists a worker's current tasks. Read from Redis in a few round trips, on each refresh."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.exceptions import ResponseError

from runtime.app.connections import Runtime


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def oldest_waiting(runtime: Runtime, queue: str, now: float | None = None) -> float | None:
    """Seconds the oldest task not yet handed to a worker has waited in `queue` (None: none waits). Its
    stream entry id is the time (ms) it joined the stream: enqueued, or due after a delay or backoff."""
    redis = runtime.broker.redis
    stream = runtime.keys.queue(queue).stream
    start = "-"
    try:
        for group in await redis.xinfo_groups(stream):
            if _text(group.get("name")) == runtime.keys.group:
                start = f"({_text(group.get('last-delivered-id'))}"
    except ResponseError:  # no stream yet: nothing was ever queued there
        return None
    entries = await redis.xrange(stream, min=start, max="+", count=1)
    if not entries:
        return None
    joined = int(_text(entries[0][0]).split("-")[0]) / 1000
    return round(max(0.0, (time.time() if now is None else now) - joined), 1)


async def with_weights_and_ages(runtime: Runtime, stats: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`operations.queue_stats`, each queue with its `weight` and `oldest_waiting_seconds` (None: none waits)."""
    weights = runtime.app.manifest.queue_weights()
    for name, row in stats.items():
        row["weight"] = weights.get(name)
        row["oldest_waiting_seconds"] = await oldest_waiting(runtime, name) if row.get("waiting") else None
    return stats


async def running_by_worker(runtime: Runtime) -> dict[str, list[dict[str, Any]]]:
    """{worker name: [{"run_id", "function", "attempt", "started_at"}]}: the tasks each worker has started
    and not finished, from each queue's start marks and the stream entries they name."""
    redis = runtime.broker.redis
    out: dict[str, list[dict[str, Any]]] = {}
    for queue in runtime.app.manifest.queue_names():
        keys = runtime.keys.queue(queue)
        marks = await redis.hgetall(keys.started)
        if not marks:
            continue
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id in marks:
                pipe.xrange(keys.stream, min=entry_id, max=entry_id, count=1)
            entries = await pipe.execute()
        for raw, found in zip(marks.values(), entries, strict=True):
            try:
                mark = json.loads(raw)
                message = json.loads(found[0][1][b"data"]) if found else {}
            except (ValueError, KeyError, IndexError, TypeError):
                continue
            run_id = message.get("task_id")
            if not run_id:
                continue
            out.setdefault(str(mark.get("worker")), []).append(
                {
                    "run_id": run_id,
                    "function": message.get("task_name"),
                    "queue": queue,
                    "attempt": mark.get("attempt"),
                    "started_at": mark.get("started_at"),
                }
            )
    return out
