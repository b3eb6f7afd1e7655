"""Dead letters: a run that has spent its retries joins `{app}:dead` (and its queue's own list, for the
per-queue counts) and the task's failure hooks run.

The list is written by `flush()`, which the worker calls after the run records are saved, so a dead
letter is never shown before its run's `failed` record exists.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.app.decorators import Failure

if TYPE_CHECKING:
    from runtime.app.connections import Runtime

logger = logging.getLogger("runtime.task")


class DeadLetterMiddleware(TaskiqMiddleware):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.pending: dict[str, tuple[float, str]] = {}  # run id -> (failure time, queue)

    def add(self, run_id: str, queue: str) -> None:
        self.pending[run_id] = (time.time(), queue)

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        if message.labels.get("outcome") != "failed":
            return
        self.add(message.task_id, str(message.labels.get("queue") or "default"))
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
            keys = self.runtime.keys
            try:
                async with self.runtime.broker.redis.pipeline(transaction=False) as pipe:
                    pipe.zadd(keys.dead, {run_id: at for run_id, (at, _) in batch.items()})
                    for run_id, (at, queue) in batch.items():
                        pipe.zadd(keys.queue(queue).dead, {run_id: at})
                    await pipe.execute()
            except BaseException:
                self.pending = batch | self.pending
                raise


MAX_ALERT_READ = 10_000  # newest dead letters read to count them per function (for per-function thresholds)


class DeadLetterAlert:
    """Warns, in one log line, when the dead-letter list passes `dead_letter_alert` (the manifest's default
    for the whole list, a function's own for that function's dead letters); once per crossing, not per
    failure: it re-arms when the count drops to the threshold or below. The scheduler (one leader) checks."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.over: set[str] = set()  # "" (the whole list) and the functions that are over their threshold

    async def levels(self) -> dict[str, tuple[int, int]]:
        """{"" or function: (count, threshold)} for every threshold the manifest sets."""
        manifest = self.runtime.app.manifest
        redis = self.runtime.broker.redis
        out: dict[str, tuple[int, int]] = {}
        if (everything := manifest.dead_letter_alert()) is not None:
            out[""] = (int(await redis.zcard(self.runtime.keys.dead)), everything)
        own = {
            name: limit
            for name, spec in manifest.tasks().items()
            if spec.task is not None and (limit := spec.task.dead_letter_alert) is not None
        }
        if own:
            ids = [_text(i) for i in await redis.zrevrange(self.runtime.keys.dead, 0, MAX_ALERT_READ - 1)]
            runs = await self.runtime.store.get_many(ids)
            for name, limit in own.items():
                out[name] = (sum(run.function == name for run in runs.values()), limit)
        return out

    async def check(self) -> list[str]:
        """Log a warning for each threshold newly passed; returns their names ("" is the whole list)."""
        crossed = []
        for name, (count, threshold) in (await self.levels()).items():
            if count <= threshold:
                self.over.discard(name)
                continue
            if name in self.over:
                continue
            self.over.add(name)
            crossed.append(name)
            where = f"dead letters of {name}" if name else "the dead-letter list"
            logger.warning(
                "%s: %d run(s), above dead_letter_alert %d; see `runtime runs --status failed`, then "
                "replay or delete them",
                where,
                count,
                threshold,
                extra={"function": name} if name else {},
            )
        return crossed


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
