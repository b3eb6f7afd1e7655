"""Dead letters: a run that has spent its retries joins `{app}:dead` and the task's failure hooks run.

The list is written by `flush()`, which the worker calls after the run records are saved, so a dead
letter is never shown before its run's `failed` record exists.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.decorators import Failure

if TYPE_CHECKING:
    from runtime.connections import Runtime

logger = logging.getLogger("runtime.task")


class DeadLetterMiddleware(TaskiqMiddleware):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.pending: dict[str, float] = {}

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if message.labels.get("outcome") != "failed":
            return
        self.pending[message.task_id] = time.time()
        fn = self.runtime.app.tasks.get(message.task_name)
        if fn is None:
            return
        failure = Failure(
            run_id=message.task_id,
            function=message.task_name,
            arguments=message.kwargs,
            error=str(message.labels["history"][-1]["error"]),
            attempts=int(message.labels.get("attempt", 1)),
        )
        for hook in fn.failure_hooks:
            try:
                outcome = hook(failure)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                logger.exception(
                    "failure hook %s of %s raised",
                    getattr(hook, "__name__", hook),
                    message.task_name,
                    extra={"run_id": message.task_id, "function": message.task_name},
                )

    async def flush(self) -> None:
        if self.pending:
            batch, self.pending = self.pending, {}
            try:
                await self.runtime.broker.redis.zadd(self.runtime.keys.dead, batch)
            except BaseException:
                self.pending = batch | self.pending
                raise
