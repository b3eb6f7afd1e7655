"""Unique runs: a finished run (succeeded or failed) gives up its idempotency key, so the next enqueue with
that key or those arguments queues a new run (a cancelled one too). The key also expires by itself after its window."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

if TYPE_CHECKING:
    from runtime.app.connections import Runtime

# delete the key only while this run holds it (a later run may hold it already, after the window)
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class UniqueMiddleware(TaskiqMiddleware):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self._release = runtime.broker.redis.register_script(_RELEASE)

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if message.labels.get("outcome") in ("succeeded", "failed", "cancelled"):
            await self.release(message)

    async def release(self, message: TaskiqMessage) -> None:
        key = message.labels.get("unique")
        if isinstance(key, str):
            await self._release(keys=[key], args=[message.task_id])
