"""Task log: one line per start, completion, retry and final failure, with run id and function."""

from __future__ import annotations

import logging
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

logger = logging.getLogger("runtime.task")


class TaskLogMiddleware(TaskiqMiddleware):
    def __init__(self, max_attempts: dict[str, int]) -> None:
        super().__init__()
        self.max_attempts = max_attempts

    def _extra(self, message: TaskiqMessage, **more: Any) -> dict[str, Any]:
        attempt = int(message.labels.get("attempt", 1))
        return {
            "run_id": message.task_id,
            "function": message.task_name,
            "attempt": attempt,
            "max_attempts": self.max_attempts.get(message.task_name, attempt),
        } | more

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        if logger.isEnabledFor(logging.INFO):
            extra = self._extra(message)
            logger.info(
                "start %s %s attempt %d/%d",
                message.task_name,
                message.task_id,
                extra["attempt"],
                extra["max_attempts"],
                extra=extra,
            )
        return message

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        outcome = message.labels.get("outcome")
        if outcome == "succeeded" and not logger.isEnabledFor(logging.INFO):
            return  # nothing to say: no line to build
        history = message.labels.get("history") or [{}]
        error = history[-1].get("error")  # as recorded: capped in length
        trace = history[-1].get("traceback")
        extra = self._extra(message, duration_ms=round(result.execution_time * 1000, 1), outcome=outcome)
        where = f"{message.task_name} {message.task_id} attempt {extra['attempt']}/{extra['max_attempts']}"
        if outcome == "succeeded":
            if logger.isEnabledFor(logging.INFO):
                logger.info("done %s in %.1f ms", where, extra["duration_ms"], extra=extra)
        elif outcome == "retrying" and history[-1].get("error_type") == "RetryAfter":
            delay = float(message.labels.get("retry_in", 0))
            logger.info("%s asked to retry after %.2f s (not counted as a failure)", where, delay, extra=extra)
        elif outcome == "retrying":
            delay = float(message.labels.get("retry_in", 0))
            logger.warning(
                "retry %s failed: %s; next attempt in %.2f s",
                where,
                error,
                delay,
                extra=extra | {"retry_in": round(delay, 3), "error": error, "traceback": trace},
            )
        else:
            logger.error(
                "failed %s: %s%s",
                where,
                error,
                f"\n{trace}" if trace else "",
                extra=extra | {"error": error, "traceback": trace},
            )
