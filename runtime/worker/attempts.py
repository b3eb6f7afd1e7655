"""An attempt once the worker has started it: the taskiq middlewares it passes, the function run under its time
limits, and how it ends (finished, cancelled, or dead-lettered as no task), handed back for the commits."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.app.connections import Runtime
from runtime.app.context import Context
from runtime.app.parents import tell_parent
from runtime.durable.events import Events
from runtime.durable.steps import MAX_SLEEP, StepLimits, Steps, Suspended
from runtime.errors import RetryAfter, UnknownFunction
from runtime.flow.batch import batch_arguments, forget_items
from runtime.flow.debounce import save_last_arguments
from runtime.queue.broker import Delivery
from runtime.queue.messages import InvalidMessage, built, describe, describe_traceback, error_type
from runtime.store.run_ids import new_run_ids
from runtime.tracing import setup_tracing
from runtime.worker import time_limit
from runtime.worker.cancellation import Cancellations
from runtime.worker.middleware import (
    DeadLetterMiddleware,
    RetryMiddleware,
    RunRecordMiddleware,
    TaskLogMiddleware,
    UniqueMiddleware,
)
from runtime.worker.middleware.log_context import LogContextMiddleware
from runtime.worker.middleware.metrics import MetricsMiddleware
from runtime.worker.middleware.retries import backoff, resend
from runtime.worker.sync_pool import SyncPool

logger = logging.getLogger("runtime.worker")

# seconds after which a run whose wait could not be registered resumes to register it again (its entry is acked,
# and its message sent again, once Redis answers: an event sent meanwhile is in the log the registration reads)
REGISTER_AGAIN = 1.0


async def call(hook: Callable[..., Any], *args: Any) -> Any:
    value = hook(*args)
    return await value if inspect.isawaitable(value) else value


Hook = tuple[Callable[..., Any], bool]  # a middleware's hook, and whether it is a coroutine function


def overriding(middlewares: list[TaskiqMiddleware], hook: str) -> list[Hook]:
    """The middlewares' own `hook` methods, skipping the base class's no-ops, each with whether it must be
    awaited: resolved once, so a task's hooks are plain calls (awaiting every result, to see whether it is
    awaitable, cost ~2 µs a hook, ten hooks a task)."""
    base = getattr(TaskiqMiddleware, hook)
    found = [getattr(m, hook) for m in middlewares if getattr(type(m), hook) is not base]
    return [(method, inspect.iscoroutinefunction(method)) for method in found]


def identity(name: str) -> dict[str, Any]:
    """Who runs an attempt, as its start mark and its `history[]` entry say: the worker (its consumer name, as
    the workers view lists it), its host and its pid."""
    return {"worker": name, "host": socket.gethostname(), "pid": os.getpid()}


def attempt(labels: dict[str, Any], duration: float | None, **outcome: Any) -> dict[str, Any]:
    """One `history[]` entry: the attempt, when it started, how long it ran, the worker that ran it (from
    its start mark: a dead worker's, for an attempt that died with it) and how it ended."""
    ran_on = labels.get("ran_on") or {}
    return {
        "attempt": labels["attempt"],
        "started_at": labels["started_at"],
        "duration_ms": None if duration is None else round(duration * 1000, 2),
        **{key: ran_on.get(key) for key in ("worker", "host", "pid")},
        **outcome,
    }


class Attempts:
    def __init__(
        self,
        runtime: Runtime,
        max_attempts: dict[str, int],
        sync_pool: SyncPool,
        cancels: Cancellations,
        finished: Callable[[str, tuple[bytes, float] | None], None],
    ) -> None:
        self.records = RunRecordMiddleware(runtime.store, max_attempts)
        self.retries = RetryMiddleware(runtime)
        self.dead_letters = DeadLetterMiddleware(runtime)
        self.unique = UniqueMiddleware(runtime)
        self.middlewares: list[TaskiqMiddleware] = [
            self.retries,
            self.records,
            self.dead_letters,
            self.unique,
            TaskLogMiddleware(max_attempts),
            MetricsMiddleware(),
        ]
        self.middlewares.insert(0, LogContextMiddleware())
        # imports OpenTelemetry only when OTEL_EXPORTER_OTLP_ENDPOINT is set
        if setup_tracing(runtime.app.name, "worker", lambda: runtime.store.engine):
            from runtime.worker.middleware.tracing import TracingMiddleware

            self.middlewares.append(TracingMiddleware())
        self.pre_execute = overriding(self.middlewares, "pre_execute")
        self.on_error = overriding(self.middlewares, "on_error")
        self.post_execute = overriding(self.middlewares, "post_execute")
        self.runtime = runtime
        self.events = Events(runtime.broker.redis, runtime.keys)
        self.sync_pool = sync_pool
        self.limits = time_limit.TimeLimits()
        self.cancels = cancels
        self.finished = finished  # told of an entry whose attempt is over (with its next attempt, if any)
        self.done_count = 0  # attempts that ended here (succeeded, failed, or failed to be retried)
        self.failed_count = 0  # of which raised: a run's final failure and each attempt that will be retried

    async def cancelled(self, delivery: Delivery, message: TaskiqMessage, duration: float | None) -> None:
        labels = message.labels
        labels["outcome"] = "cancelled"
        if duration is not None:
            labels["history"].append(
                attempt(labels, duration, error="cancelled while running", error_type="Cancelled", traceback=None)
            )
        else:  # it never started (this time): the run's start is its first attempt's, if it had one
            labels.pop("started_at", None)
        self.cancels.requested.discard(delivery.key)
        if labels.get("parent"):
            await tell_parent(self.runtime, message.task_id, "cancelled")
        self.records.cancelled(message)
        await self.unique.release(message)
        logger.info("cancelled %s %s", message.task_name, message.task_id, extra={"run_id": message.task_id})
        self.finished(delivery.key, None)

    async def finish(
        self,
        delivery: Delivery,
        message: TaskiqMessage,
        value: Any,
        error: BaseException | None,
        duration: float | None,
    ) -> None:
        if isinstance(value, Suspended):
            await self.suspend(delivery, message, value, duration or 0.0)
            return
        labels = message.labels
        labels["history"].append(
            attempt(
                labels,
                duration,
                error=None if error is None else describe(error),
                error_type=None if error is None else error_type(error),
                traceback=None if error is None else describe_traceback(error),
            )
        )
        outcome = {"is_err": error is not None, "log": None, "return_value": value, "execution_time": duration or 0.0}
        result: TaskiqResult[Any] = built(TaskiqResult, {**outcome, "labels": labels, "error": error})
        if error is not None:
            for hook, awaited in self.on_error:
                if awaited:
                    await hook(message, result, error)
                else:
                    hook(message, result, error)
        for hook, awaited in self.post_execute:
            if awaited:
                await hook(message, result)
            else:
                hook(message, result)
        if labels.get("parent") and labels.get("outcome") in ("succeeded", "failed"):
            await tell_parent(self.runtime, message.task_id, labels["outcome"], value, error)
        if labels.get("outcome") in ("succeeded", "failed") and self._batched(message.task_name):
            await forget_items(self.runtime, message)
        self.done_count += 1
        self.failed_count += error is not None and not isinstance(error, RetryAfter)  # a 429 is no failure
        self.finished(delivery.key, self.retries.take(message.task_id))

    def reject(self, delivery: Delivery, error: InvalidMessage) -> None:
        """An entry no worker can run: dead-lettered with the reason (and its raw text), then acked."""
        run_id = error.run_id or new_run_ids(1)[0]
        logger.error("dead-lettering entry %s: %s", delivery.key, error, extra={"run_id": run_id})
        self.records.invalid(run_id, error.function, error.raw, f"invalid task message: {error}")
        self.dead_letters.add(run_id, delivery.queue)
        self.finished(delivery.key, None)

    async def _spawn(self, parent: str, task: Any, arguments: dict[str, Any], child: str) -> None:
        """Queue a parent's child run (`ctx.invoke`), at most once for its id (a guard key in its queue)."""
        runtime = self.runtime
        fn = runtime.app.tasks.get(getattr(task, "name", None) or "")
        if fn is None or fn is not task:
            raise ValueError(f"{task!r:.60} is not a task of the app '{runtime.app.name}' (is it in the manifest?)")
        guard = runtime.keys.queue(runtime.queue_of(fn)).fire_guard(f"invoke:{child}", 0)
        await runtime.submit(fn, [arguments], run_ids=[child], guard=guard, guard_seconds=MAX_SLEEP, parent=parent)

    def context(self, message: TaskiqMessage, deadline: Any) -> Context | None:
        """The Context of this attempt (its run, its `deadline` timestamp, and its steps with the function's
        retries), or None for a function that takes none (nothing to make for it)."""
        name = message.task_name
        manifest = self.runtime.app.manifest
        fn = self.runtime.app.tasks.get(name)
        if fn is None or fn.context_param is None:
            return None
        deadline = as_datetime(deadline)
        settings = self.runtime.settings
        curve = manifest.backoff(name)
        steps = Steps(
            message.task_id,
            self.runtime.store.steps,
            retries=manifest.retries(name),
            backoff=functools.partial(backoff, base=curve.base, cap=curve.max),
            limits=StepLimits(settings.max_steps, settings.max_step_size, settings.max_steps_size),
            events=self.events,
            arguments=message.kwargs,
            spawn=functools.partial(self._spawn, message.task_id),
        )
        return Context(message.task_id, message.labels["attempt"], deadline, step=steps)

    def _batched(self, name: str) -> bool:
        function = self.runtime.app.manifest.functions.get(name)
        return function is not None and function.task is not None and function.task.batch is not None

    def _debounced(self, name: str) -> bool:
        function = self.runtime.app.manifest.functions.get(name)
        return function is not None and function.task is not None and function.task.debounce is not None

    async def run(self, message: TaskiqMessage, context: Context | None) -> Any:
        fn = self.runtime.app.tasks.get(message.task_name)
        if fn is None:
            raise UnknownFunction(
                f"function '{message.task_name}' is not in the manifest of '{self.runtime.app.name}'; "
                "restore it, then replay this run"
            )
        timeout = self.runtime.app.manifest.timeout(message.task_name)
        arguments = message.kwargs
        if self._batched(message.task_name):
            arguments = await batch_arguments(self.runtime, message)
        elif self._debounced(message.task_name) and message.labels["attempt"] == 1:
            await save_last_arguments(self.runtime, message)
        kwargs = fn.validate(arguments)
        if fn.context_param is not None:
            kwargs[fn.context_param] = context
        try:
            deadline = message.labels.get("deadline")
            return await time_limit.call(fn, kwargs, timeout, deadline, self.sync_pool, self.limits)
        except Suspended as suspended:
            return suspended  # `finish` sends the run again for later, and records it waiting

    async def suspend(self, delivery: Delivery, message: TaskiqMessage, suspended: Suspended, duration: float) -> None:
        """The run waits (a sleep, an event): its entry is acked with its message sent again, due when it wakes
        (or its wait times out), at the same attempt; it holds no worker meanwhile, keeps its unique key, and is
        recorded `waiting`. A wait for an event is registered first; an event that came already resumes it now
        (an event sent later moves its message to now: the ack's ZADD LT keeps it there). A wait that could not be
        registered resumes after REGISTER_AGAIN instead of at its timeout, and registers again."""
        labels = message.labels
        labels["history"].append(
            attempt(labels, duration, error=None, error_type=None, traceback=None, waited_for=suspended.what)
        )
        labels["waiting_for"] = suspended.what
        again = resend(self.runtime, message, labels["attempt"], suspended.until)
        due = suspended.until
        if suspended.wait is not None:
            wait = suspended.wait
            queue = str(labels.get("queue") or self.runtime.app.manifest.queue(message.task_name))
            waiter = {"field": wait.field, "value": wait.value, "queue": queue, "run_id": message.task_id}
            waiter["message"] = again.decode()
            try:
                if await self.events.register(wait, waiter) is not None:
                    due = time.time()  # its event is there: it goes on at once
            except Exception as exc:  # Redis away: unregistered, no event would end the wait before its timeout
                due = min(due, time.time() + REGISTER_AGAIN)  # so it resumes and registers again once Redis is back
                logger.warning("run %s: cannot register its wait, trying again soon (%s)", message.task_id, exc)
        self.records.waiting(message)
        logger.info("run %s waits: %s", message.task_id, suspended.what, extra={"run_id": message.task_id})
        self.finished(delivery.key, (again, due))


def start_mark(data: bytes) -> dict[str, Any]:
    try:
        mark = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return mark if isinstance(mark, dict) else {}


def as_datetime(timestamp: Any) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(float(timestamp), UTC)
