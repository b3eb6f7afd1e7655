"""What debounce and batches share: their enqueue is one Lua script in the queue's slot, and a Redis that cannot
be reached fails it clearly (nothing was queued) instead of leaving it unknown."""

from __future__ import annotations

from typing import Any

from runtime.errors import EnqueueUnavailable
from runtime.queue.redis_client import is_cluster
from runtime.queue.stream_sends import NotSent, connect


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def run_script(runtime: Any, script: Any, keys: list[str], args: list[Any], name: str) -> Any:
    """The script's reply; `EnqueueUnavailable` when Redis could not be reached before it was sent."""
    redis = runtime.broker.redis
    try:
        if is_cluster(redis):  # a cluster's pipeline picks its own node
            return await script(keys=keys, args=args)
        async with redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            await connect(pipe)
            [reply] = await pipe.execute()
            return reply
    except NotSent as exc:
        raise EnqueueUnavailable(
            f"nothing was queued for '{name}': Redis is unreachable ({exc}); try again shortly"
        ) from None
