"""The dashboard's run counts: exact while counting is quick, and never waited on once it is slow (the last
count is answered, with its age, while a new one runs)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from runtime.dashboard.run_counts import FAST, RunCounts
from runtime.store.runs import RunStore
from runtime.store.values import utcnow


def rows(count: int, status: str) -> list[dict[str, object]]:
    now = utcnow()
    return [
        {
            "id": uuid.uuid4().hex,
            "function": "work",
            "arguments": {"n": i},
            "status": status,
            "attempts": 1,
            "max_attempts": 4,
            "enqueued_at": now,
            "history": [],
            "version": 1,
            "queue": "default",
        }
        for i in range(count)
    ]


async def test_a_small_store_is_counted_on_every_call(tmp_path: Path) -> None:
    store = RunStore(f"sqlite+aiosqlite:///{tmp_path}/runs.db")
    await store.init()
    try:
        counts = RunCounts(store)
        await store.insert_many(rows(3, "succeeded"))
        assert await counts.get() == ({"work": {"succeeded": 3}}, 0.0)
        await store.insert_many(rows(2, "failed"))
        assert await counts.get() == ({"work": {"succeeded": 3, "failed": 2}}, 0.0)
    finally:
        await store.close()


async def test_a_slow_count_answers_the_last_count_and_counts_again_behind(tmp_path: Path) -> None:
    """Counting sums `run_counts`, folded every few seconds, so it is quick at any store size; it is slow
    when the folds fall behind (or the database is slow). Here 300,000 unfolded count rows make it so."""
    store = RunStore(f"sqlite+aiosqlite:///{tmp_path}/runs.db")
    await store.init()
    store._fold_due = float("inf")  # no fold: the backlog stays, as when folds cannot keep up
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql(
            "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 300000) "
            "INSERT INTO run_counts (function, status, n) SELECT 'work', 'succeeded', 1 FROM seq"
        )
    counts = RunCounts(store, every=0.0)
    try:
        first, age = await counts.get()
        assert first == {"work": {"succeeded": 300_000}} and age == 0.0
        assert counts.took > FAST, f"summing 300k count rows took {counts.took * 1000:.1f} ms: not slow here"
        await store.insert_many(rows(10, "failed"))
        await asyncio.sleep(2 * counts.took)  # a slow count is not repeated sooner than twice its time
        stale, age = await counts.get()  # answered from the last count, a new one started behind it
        assert stale == {"work": {"succeeded": 300_000}} and age > 0
        assert counts.refreshing is not None
        await counts.refreshing
        fresh, _ = await counts.get()
        assert fresh == {"work": {"succeeded": 300_000, "failed": 10}}
    finally:
        if counts.refreshing is not None:
            await counts.refreshing
        await store.close()
