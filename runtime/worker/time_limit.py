"""Time limits of an attempt: the function's `timeout` and the run's `deadline`, whichever comes first.

An async function is cancelled when its time is up; a sync one runs in the pool's child process, which is
killed. A deadline that passed before the attempt started fails it without running it.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from runtime.app.decorators import TaskFunction
from runtime.app.durations import format_duration
from runtime.errors import DeadlineExceeded, TaskTimeout
from runtime.worker.sync_pool import SyncPool


async def call(
    fn: TaskFunction[..., Any], kwargs: dict[str, Any], timeout: float, deadline: Any, sync_pool: SyncPool
) -> Any:
    """Run `fn(**kwargs)` within `timeout` seconds and before `deadline` (a timestamp, or None)."""
    by_deadline = False
    if deadline is not None:
        left = float(deadline) - time.time()
        if left <= 0:
            raise DeadlineExceeded(f"its deadline ({_iso(deadline)}) passed before it started")
        by_deadline = left < timeout
        timeout = min(timeout, left)
    try:
        if fn.is_async:
            async with asyncio.timeout(timeout):
                return await fn.fn(**kwargs)
        return await sync_pool.run(fn.ref, kwargs, timeout)
    except TimeoutError:
        if by_deadline:
            raise DeadlineExceeded(f"stopped at its deadline ({_iso(deadline)})") from None
        raise TaskTimeout(f"timed out after {format_duration(timeout)}") from None


def _iso(timestamp: Any) -> str:
    return datetime.fromtimestamp(float(timestamp), UTC).isoformat(timespec="seconds")
