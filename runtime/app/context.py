"""`Context`: what a running task may ask about its run, by declaring a parameter typed `Context`.

It is not one of the task's arguments (enqueue never takes it); the worker passes it in. Long loops use it
to stop cleanly, the seed's `ctx.Done()` pattern: `cancelled` is set when the run is cancelled, when the
worker shuts down, or when the run's deadline passes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime


@dataclass
class Context:
    run_id: str
    attempt: int
    deadline: datetime | None = None
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the task should stop: `if ctx.cancelled.is_set(): ...` or `await ctx.cancelled.wait()`."""
