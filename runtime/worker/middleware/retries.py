"""Retries: a failed attempt is queued again after an exponential backoff with jitter.

`retries: 3` means three retries after the first failure (four attempts), as Asynq and Celery count,
unlike taskiq's `SimpleRetryMiddleware`. The next attempt waits in the broker's delayed set, so its
delay is honoured to the millisecond on Redis. `SkipRetry`, bad arguments and unknown functions are
never retried. The decision is written to the result's labels (`outcome`, `retry_in`) for the
middlewares that follow.

`raise RetryAfter(seconds)` (an upstream's 429) sends the run again after those seconds at the same attempt:
no failure is counted, so it is not bounded by `retries` but by the run's deadline and by MAX_RETRY_AFTER
times per run (counted in the `retry_afters` label); past either the run fails, saying why.

The next attempt is not sent here: it waits in `pending` until the worker acks the failed attempt's entry,
and goes out in the same Redis script as that ack. A worker killed in between acks nothing and sends
nothing, so the entry's next holder counts the attempt once and sends exactly one next attempt (sending it
here, then dying before the ack, made two: this one and the next holder's).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from runtime.errors import ArgumentsError, DeadlineExceeded, RetryAfter, SkipRetry, UnknownFunction

if TYPE_CHECKING:
    from runtime.app.connections import Runtime

NOT_RETRIED: tuple[type[BaseException], ...] = (SkipRetry, ArgumentsError, UnknownFunction, DeadlineExceeded)


def backoff(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): base·2^(n-1), jittered to 50-100 %."""
    ceiling = min(cap, base * 2 ** (attempt - 1))
    return float(ceiling * random.uniform(0.5, 1.0))


def resend(runtime: Runtime, message: TaskiqMessage, attempt: int, due: float) -> bytes:
    """The run's message, to send again (a retry, or a durable run resuming): the same run, with its deadline,
    parent and RetryAfter count, at `attempt`, due at `due` (`due_at`: its start's latency is measured from then).
    Its history and enqueue time are in its record, which is saved before this is sent (a waiting run's message
    is all it costs Redis)."""
    labels = message.labels
    more: dict[str, Any] = {"due_at": due}
    if labels.get("retry_afters"):  # counted per run, across its attempts
        more["retry_afters"] = labels["retry_afters"]
    return runtime.message(
        message.task_name,
        message.task_id,
        message.kwargs,
        attempt,
        deadline=labels.get("deadline"),
        parent=labels.get("parent"),
        labels=more,
    )


class RetryMiddleware(TaskiqMiddleware):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.pending: dict[str, tuple[bytes, float]] = {}  # run id -> (next attempt's message, due time)

    def take(self, run_id: str) -> tuple[bytes, float] | None:
        """The next attempt of this run, to send with the ack of the failed one (None: no retry)."""
        return self.pending.pop(run_id, None)

    async def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        labels = message.labels
        if not result.is_err:
            labels["outcome"] = "succeeded"
            return
        attempt = int(labels.get("attempt", 1))
        if isinstance(result.error, RetryAfter):
            self._retry_after(message, attempt, result.error.seconds)
            return
        manifest = self.runtime.app.manifest
        retries = manifest.retries(message.task_name) if message.task_name in manifest.functions else 0
        if isinstance(result.error, NOT_RETRIED) or attempt > retries:
            labels["outcome"] = "failed"
            return
        policy = manifest.backoff(message.task_name)
        delay = backoff(attempt, policy.base, policy.max)
        deadline = labels.get("deadline")
        if deadline is not None and time.time() + delay >= float(deadline):
            labels["outcome"] = "failed"  # the next attempt could only start after the deadline
            return
        labels["outcome"] = "retrying"
        labels["retry_in"] = delay
        due = time.time() + delay
        self.pending[message.task_id] = (resend(self.runtime, message, attempt + 1, due), due)

    def _retry_after(self, message: TaskiqMessage, attempt: int, seconds: float) -> None:
        """The task asked to run again after `seconds`: sent again at the same attempt, unless the run asked
        too often or its deadline comes first; then it fails, and its last attempt says why."""
        labels = message.labels
        asked = int(labels.get("retry_afters") or 0) + 1
        cap = self.runtime.settings.max_retry_after
        deadline = labels.get("deadline")
        if asked > cap:
            why = f"asked to retry after {seconds:g}s {asked} times; the cap is {cap} per run (MAX_RETRY_AFTER)"
        elif deadline is not None and time.time() + seconds >= float(deadline):
            ends = datetime.fromtimestamp(float(deadline), UTC).isoformat(timespec="seconds")
            why = f"asked to retry after {seconds:g}s (RetryAfter), past the run's deadline ({ends})"
        else:
            labels["outcome"] = "retrying"
            labels["retry_in"] = seconds
            labels["retry_afters"] = asked
            due = time.time() + seconds
            self.pending[message.task_id] = (resend(self.runtime, message, attempt, due), due)
            return
        labels["outcome"] = "failed"
        labels["history"][-1] |= {"error": why, "error_type": "RetryAfter"}
