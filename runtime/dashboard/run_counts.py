"""The runs per function and status that the dashboard shows every 2 s.

`RunStore.counts()` sums `run_counts`, which triggers on `runs` keep (schema 0004): a few milliseconds
whatever the store holds (it was a scan of `runs`, 13 s at 10M rows on SQLite). This stays as a guard for
what cannot be ruled out, a database slow to answer: while a count takes under FAST, each call counts
afresh, so the numbers are exact; once one takes longer, calls answer at once with the last count while a
new one runs in the background, at most one at a time and at least every `every` seconds (or twice its
duration). The answer says how old it is.
"""

from __future__ import annotations

import asyncio
import logging
import time

from runtime.store.runs import RunStore

logger = logging.getLogger("runtime.dashboard")

FAST = 0.01  # seconds: a count this quick is done on every call


class RunCounts:
    def __init__(self, store: RunStore, every: float = 2.0) -> None:
        self.store = store
        self.every = every
        self.value: dict[str, dict[str, int]] | None = None
        self.counted_at = 0.0  # monotonic time the value was counted
        self.took = 0.0
        self.refreshing: asyncio.Task[None] | None = None

    async def get(self) -> tuple[dict[str, dict[str, int]], float]:
        """{function: {status: n}} and its age in seconds (0 when counted for this call)."""
        if self.value is None or self.took < FAST:
            await self._count()
            assert self.value is not None
            return self.value, 0.0
        due = self.counted_at + max(self.every, 2 * self.took)
        if time.monotonic() >= due and (self.refreshing is None or self.refreshing.done()):
            self.refreshing = asyncio.create_task(self._refresh())
        return self.value, time.monotonic() - self.counted_at

    async def _count(self) -> None:
        started = time.monotonic()
        self.value = await self.store.counts()
        self.counted_at = time.monotonic()
        self.took = self.counted_at - started

    async def _refresh(self) -> None:
        try:
            await self._count()
        except Exception as exc:  # the next call tries again; meanwhile the last count stands
            logger.warning("cannot count the runs: %s", exc)
            self.counted_at = time.monotonic()
