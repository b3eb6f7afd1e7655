"""`Context`: what a running task may ask about its run, by declaring a parameter typed `Context`.

It is not one of the task's arguments (enqueue never takes it); the worker passes it in. Long loops use it
to stop cleanly, the seed's `ctx.Done()` pattern: `cancelled` is set when the run is cancelled, when the
worker shuts down, or when the run's deadline passes. Durable functions run their steps with `ctx.step.run`
(runtime/durable/steps.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from runtime.durable.steps import Steps


@dataclass
class Context:
    run_id: str
    attempt: int
    deadline: datetime | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the task should stop: `if ctx.cancelled.is_set(): ...` or `await ctx.cancelled.wait()`."""
    step: Steps = field(default=None)  # type: ignore[assignment]
    """The run's steps: `await ctx.step.run(name, fn, *args)` runs `fn` once and saves its result."""

    def __post_init__(self) -> None:
        if self.step is None:
            self.step = Steps(self.run_id, None)  # no run store here: using a step says so

    async def sleep(self, name: str, duration: float | timedelta) -> None:
        """Wait `duration` (seconds or a timedelta) as the step `name`: the run is `waiting`, holds no worker
        and resumes on any worker when the time comes; code before it runs again then, saved steps do not."""
        await self.step.sleep(name, duration)

    async def sleep_until(self, name: str, when: datetime) -> None:
        """Wait until `when` (naive means UTC) as the step `name`; see `sleep`."""
        await self.step.sleep_until(name, when)

    async def wait_for_event(
        self, name: str, *, event: str, match: str | None = None, timeout: float | timedelta = 86400.0
    ) -> Any:
        """Wait, as the step `name`, for an event called `event` (sent with `send_event`, the CLI or the API),
        holding no worker: returns its data, or None after `timeout` (seconds or a timedelta). With `match`,
        only an event whose data's `match` field equals this run's argument of that name counts."""
        return await self.step.wait_for_event(name, event=event, match=match, timeout=timeout)

    async def invoke(self, name: str, task: Any, /, **arguments: Any) -> Any:
        """Run `task(**arguments)` as a child run, as the step `name`, holding no worker while it runs: returns
        its result, or raises StepFailed if it failed or was cancelled. Queued once, however often this run
        resumes."""
        return await self.step.invoke(name, task, **arguments)
