"""Unique runs: an enqueue whose key (given, or the function's `unique` window over its arguments) is held by an
unfinished run returns that run's id and queues nothing."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

import orjson

from runtime.app.enqueue_options import _with_label
from runtime.app.enqueue_outcome import describe
from runtime.errors import EnqueueUnavailable
from runtime.queue.redis_client import is_cluster
from runtime.queue.stream_sends import NotSent, connect

# `runtime` below is runtime/app/connections.py's Runtime, which imports this module (so typed Any here)

logger = logging.getLogger("runtime.enqueue")


async def submit_unique(
    runtime: Any,
    name: str,
    queue: str,
    rows: list[dict[str, Any]],
    messages: list[bytes],
    seconds: float,
    key: str | None,
    hold: float,
) -> list[dict[str, Any]]:
    """Each run queued unless its key (given, or its function and canonical arguments) is held: then
    the holder's id comes back and nothing is queued. Atomic in Redis, so concurrent callers in any
    process get one run. The key goes when the run finishes, or after `hold`."""
    qk = runtime.keys.queue(queue)
    due = time.time() + seconds if seconds else 0
    out = []
    for row, message in zip(rows, messages, strict=True):
        canonical = orjson.dumps(row["arguments"], option=orjson.OPT_SORT_KEYS)
        token = key if key is not None else hashlib.sha256(canonical).hexdigest()
        unique_key = qk.unique(name, token)
        message = _with_label(message, "unique", unique_key)
        holder = await _kick_unique(
            runtime, name, key, [qk.stream, qk.delayed, unique_key], [due, int(hold * 1000), row["id"], message]
        )
        if holder:
            out.append(row | {"id": holder.decode() if isinstance(holder, bytes) else str(holder)})
            continue
        try:
            await runtime.records.insert([row])
        except Exception as exc:  # queued: the worker's first update writes the record
            logger.warning("queued run %s of %s, but its record could not be saved (%s)", row["id"], name, exc)
        out.append(row)
    return out


async def _kick_unique(runtime: Any, name: str, key: str | None, keys: list[str], args: list[Any]) -> Any:
    """Run the unique script; a Redis that cannot be reached is a clear failure: only it can decide."""
    try:
        if is_cluster(runtime.broker.redis):  # a cluster's pipeline picks its own node
            return await runtime._unique_kick(keys=keys, args=args)
        async with runtime.broker.redis.pipeline(transaction=False) as pipe:
            await runtime._unique_kick(keys=keys, args=args, client=pipe)
            await connect(pipe)
            [holder] = await pipe.execute()
            return holder
    except NotSent as exc:
        option = "its key" if key is not None else "its function's `unique` window"
        raise EnqueueUnavailable(
            f"nothing was queued for '{name}': {option} needs Redis to tell a duplicate, and Redis is "
            f"unreachable ({describe(exc)}); try again shortly"
        ) from None
