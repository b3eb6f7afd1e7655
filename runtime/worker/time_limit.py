"""Time limits of an attempt: the function's `timeout` and the run's `deadline`, whichever comes first.

An async function is cancelled when its time is up; a sync one runs in the pool's child process, which is
killed. A deadline that passed before the attempt started fails it without running it.

The async limits of every running attempt are watched by one timer (`TimeLimits`), armed at the earliest one:
an attempt costs a dict entry, not the timer handle, heap push and context manager of an `asyncio.timeout`.
Limits are mostly minutes and attempts mostly milliseconds, so the timer seldom fires; when it does it cancels
the attempts that are due, each of which turns its CancelledError into the timeout, as `asyncio.timeout` would.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from typing import Any

from runtime.app.decorators import TaskFunction
from runtime.app.durations import format_duration
from runtime.errors import DeadlineExceeded, TaskTimeout
from runtime.worker.sync_pool import SyncPool


class TimeLimits:
    """The time limits of the running async attempts (their asyncio tasks), enforced by one timer."""

    def __init__(self) -> None:
        self.due: dict[asyncio.Task[Any], float] = {}  # task -> when its attempt is cut (the loop's clock)
        self.expired: set[asyncio.Task[Any]] = set()  # tasks this cancelled, until their attempt ends
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = math.inf

    def start(self, task: asyncio.Task[Any], seconds: float) -> None:
        loop = task.get_loop()
        due = loop.time() + seconds
        self.due[task] = due
        if due < self.timer_at:
            self._arm(loop, due)

    def end(self, task: asyncio.Task[Any]) -> bool:
        """The attempt is over: whether its time ran out (then its cancel is withdrawn)."""
        self.due.pop(task, None)
        if task not in self.expired:
            return False
        self.expired.discard(task)
        task.uncancel()
        return True

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer, self.timer_at = loop.call_at(when, self._fire, loop), when

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer, self.timer_at = None, math.inf
        now = loop.time()
        for task, due in list(self.due.items()):
            if due <= now:
                del self.due[task]
                self.expired.add(task)
                task.cancel()
        if self.due:
            self._arm(loop, min(self.due.values()))


async def call(
    fn: TaskFunction[..., Any],
    kwargs: dict[str, Any],
    timeout: float,
    deadline: Any,
    sync_pool: SyncPool,
    limits: TimeLimits,
) -> Any:
    """Run `fn(**kwargs)` within `timeout` seconds and before `deadline` (a timestamp, or None); `limits` watches
    the worker's async attempts (all on one event loop)."""
    by_deadline = False
    if deadline is not None:
        left = float(deadline) - time.time()
        if left <= 0:
            raise DeadlineExceeded(f"its deadline ({_iso(deadline)}) passed before it started")
        by_deadline = left < timeout
        timeout = min(timeout, left)
    try:
        if not fn.is_async:
            return await sync_pool.run(fn.ref, kwargs, timeout)
        task = asyncio.current_task()
        assert task is not None
        cancelling = task.cancelling()
        limits.start(task, timeout)
        try:
            return await fn.fn(**kwargs)
        except asyncio.CancelledError:
            if limits.end(task) and task.cancelling() <= cancelling:
                raise TimeoutError from None  # cut by its limit alone (not also stopped or cancelled)
            raise
        finally:
            limits.end(task)
    except TimeoutError:
        if by_deadline:
            raise DeadlineExceeded(f"stopped at its deadline ({_iso(deadline)})") from None
        raise TaskTimeout(f"timed out after {format_duration(timeout)}") from None


def _iso(timestamp: Any) -> str:
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="seconds")
