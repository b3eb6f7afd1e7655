"""Run metrics: each finished attempt counted by function, queue and outcome, with its duration, and each
run's wait from enqueue to its first start (see runtime/ops/metrics.py for how they are served).

It runs in the worker, so sync tasks (whose code runs in child processes) are counted here, in the parent.
"""

from __future__ import annotations

import time
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.errors import WorkerDied
from runtime.ops.metrics import metrics


def _queue(message: TaskiqMessage) -> str:
    return str(message.labels.get("queue") or "default")


class MetricsMiddleware(TaskiqMiddleware):
    def __init__(self) -> None:
        super().__init__()
        self.metrics = metrics()
        # each series' child, found once: `labels()` takes a lock and checks its values on every call
        self.children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (metric, *values)
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = metric.labels(*values)
        return child

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        labels = message.labels
        if labels.get("attempt", 1) == 1:  # a retry's wait is its backoff, not the queue's latency
            # a delayed run waits from when it was due (`due_at`, when the message says), not from its enqueue
            since = labels.get("due_at") or labels.get("enqueued_at")
            started = labels.get("started_at") or time.time()
            if isinstance(since, int | float) and isinstance(started, int | float):
                self._child(self.metrics.run_latency, message.task_name, _queue(message)).observe(
                    max(0.0, started - since)
                )
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        queue = _queue(message)
        outcome = str(message.labels.get("outcome") or ("failed" if result.is_err else "succeeded"))
        self._child(self.metrics.runs_finished, message.task_name, queue, outcome).inc()
        if not isinstance(result.error, WorkerDied):  # a crashed attempt has no duration to speak of
            self._child(self.metrics.run_duration, message.task_name, queue).observe(result.execution_time)
