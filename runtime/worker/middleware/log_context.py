"""Log context: every line logged while an attempt runs carries its run's `run_id`, `function`, `attempt`,
`queue` (and `trace_id` when traced), the lines a task logs itself included.

The worker runs each attempt in an asyncio task of its own, from `pre_execute` to `post_execute`, so a
context variable bound here holds for the whole attempt and for nothing else: it ends with that task.
"""

from __future__ import annotations

from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.logs import bind_run, run_context
from runtime.tracing import trace_id_of


def run_fields(message: TaskiqMessage) -> dict[str, Any]:
    labels = message.labels
    return {
        "run_id": message.task_id,
        "function": message.task_name,
        "attempt": int(labels.get("attempt", 1)),
        "queue": str(labels.get("queue") or "default"),
        "trace_id": trace_id_of(labels),
    }


class LogContextMiddleware(TaskiqMiddleware):
    """First in the worker's list, so the other middlewares' lines about the attempt carry the fields too."""

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        bind_run(run_fields(message))
        return message

    def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException) -> None:
        if run_context.get() is None:  # an attempt that died with its worker never passed pre_execute
            bind_run(run_fields(message))
