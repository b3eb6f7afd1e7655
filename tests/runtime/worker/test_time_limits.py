"""The async time limits of a worker's attempts, watched by one timer (runtime/worker/time_limit.py): each attempt
is cut at its own limit whatever the order they start in, an attempt that ended leaves nothing behind for the next
one on the same runner, and a cancel from elsewhere stays a cancel."""

from __future__ import annotations

import asyncio
import time

import pytest

from runtime import task
from runtime.errors import TaskTimeout
from runtime.worker.sync_pool import SyncPool
from runtime.worker.time_limit import TimeLimits, call

POOL = SyncPool(1)  # never started: these functions are async


@task
async def nap(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def attempt(limits: TimeLimits, seconds: float, limit: float) -> tuple[str, float]:
    """How an attempt that sleeps `seconds` under `limit` ends, and after how long."""
    started = time.monotonic()
    try:
        await call(nap, {"seconds": seconds}, limit, None, POOL, limits)
        outcome = "done"
    except TaskTimeout:
        outcome = "timed out"
    return outcome, time.monotonic() - started


async def test_a_short_limit_started_after_a_long_one_is_cut_at_its_own_time() -> None:
    limits = TimeLimits()
    long = asyncio.create_task(attempt(limits, 1.0, 30.0))
    await asyncio.sleep(0.05)
    outcome, took = await attempt(limits, 5.0, 0.2)  # armed later, due sooner: the timer moves up to it
    assert outcome == "timed out" and 0.15 < took < 1.0
    assert await long == ("done", pytest.approx(1.0, abs=0.5))  # the long one was not cut with it


async def test_every_attempt_due_at_once_is_cut_and_the_timer_is_armed_again_for_the_rest() -> None:
    limits = TimeLimits()
    ends = await asyncio.gather(
        attempt(limits, 5.0, 0.1), attempt(limits, 5.0, 0.1), attempt(limits, 5.0, 0.3), attempt(limits, 0.05, 0.1)
    )
    assert [outcome for outcome, _ in ends] == ["timed out", "timed out", "timed out", "done"]
    assert 0.25 < ends[2][1] < 1.0
    assert not limits.due and not limits.expired


async def test_an_attempt_that_ended_leaves_no_limit_behind_for_the_next_one_on_its_runner() -> None:
    limits = TimeLimits()
    assert await attempt(limits, 0.01, 0.1) == ("done", pytest.approx(0.01, abs=0.08))
    # the same task (a runner) goes on to a longer attempt with a longer limit: the first one's timer, still
    # armed at 0.1 s, must not cut it
    outcome, took = await attempt(limits, 0.4, 10.0)
    assert outcome == "done" and took >= 0.4
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_cancel_from_elsewhere_stays_a_cancel_and_is_not_taken_for_a_timeout() -> None:
    limits = TimeLimits()
    running = asyncio.create_task(attempt(limits, 5.0, 10.0))
    await asyncio.sleep(0.05)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert not limits.due and not limits.expired
