"""Cancellation on the worker's side: hearing cancels from any process, and the running tasks' Contexts.

`Runtime.cancel` sets a key (a worker that meets the run's message later does not start it) and publishes
the run id; every worker listens, and the one running that run stops it: its coroutine sees
CancelledError, a sync task's process is killed. `requested` tells the worker that an execution's
CancelledError is a cancel to record (`cancelled`), not a stop or a lost lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from runtime.app.context import Context

if TYPE_CHECKING:
    from runtime.app.connections import Runtime

logger = logging.getLogger("runtime.worker")


class Cancellations:
    def __init__(self, runtime: Runtime) -> None:
        self.redis = runtime.broker.redis
        self.channel = runtime.keys.cancel_channel
        self.contexts: dict[str, Context] = {}  # delivery key -> the running task's Context
        self.requested: set[str] = set()  # delivery keys whose run was cancelled while running

    def track(self, key: str, context: Context, stopping: bool) -> None:
        """A running task's Context, to set when its run is cancelled (now, if the worker is `stopping`)."""
        self.contexts[key] = context
        if stopping:
            context.cancelled.set()

    def request(self, key: str, execution: asyncio.Task[None]) -> None:
        """Stop this execution as cancelled: its Context says so first, for tasks that look."""
        self.requested.add(key)
        context = self.contexts.get(key)
        if context is not None:
            context.cancelled.set()
        execution.cancel()

    def stopping(self) -> None:
        """The worker shuts down: cooperative tasks may stop early (the drain still waits for them)."""
        for context in self.contexts.values():
            context.cancelled.set()

    async def listen(self, on_cancel: Callable[[str], None]) -> None:
        """Call `on_cancel(run_id)` for every cancel published, from any process, reconnecting as needed."""
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.subscribe(self.channel)
                    async for event in pubsub.listen():
                        if event.get("type") == "message":
                            data = event["data"]
                            on_cancel(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:
                logger.debug("cancel listener: %s; listening again", exc)
                await asyncio.sleep(1.0)
