"""A sync task's child process dies with its worker: SIGKILL the worker mid-task and the child is gone
within a second; another worker then runs the task again to completion."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from tests.chaos.harness import (
    FULL,
    Ledger,
    SideEffects,
    client,
    judge,
    process_gone,
    wait_drained,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.chaos


async def test_sync_child_dies_with_its_worker(chaos_app, redis_url, tmp_path, effects_log, fleets):
    seconds = 30.0 if FULL else 6.0
    database_url = f"sqlite:///{tmp_path}/runs.db"
    fleet = fleets(chaos_app, worker_env(redis_url, database_url, effects_log, LOG_LEVEL="info"))
    ledger, effects = Ledger(), SideEffects(effects_log)
    async with client(chaos_app, redis_url, database_url) as runtime:
        [worker] = fleet.start(1)
        worker.wait_for("ready")
        await ledger.enqueue(runtime, "sync_long", [{"seconds": seconds}])
        await wait_until(lambda: effects.read() or len(effects.starts) == 1, 20, "the sync task started")
        [start] = next(iter(effects.starts.values()))
        assert start.holder == worker.process.pid and start.pid != start.holder, "set-up: not run in a child"
        fleet.kill(worker)
        killed = time.monotonic()
        while not process_gone(start.pid) and time.monotonic() - killed < 5:
            await asyncio.sleep(0.02)
        child_lived = time.monotonic() - killed
        orphan = not process_gone(start.pid)
        if orphan:
            os.kill(start.pid, signal.SIGKILL)  # the test's own clean-up
        fleet.start(1)
        drain, records = await wait_drained(ledger, effects, database_url, seconds + 20)
    outcome = judge(
        "sync-orphan",
        ledger,
        effects,
        records,
        fleet,
        drain,
        "kills=1",
        extra=f"child_outlived_worker_by={child_lived:.2f}s{' (still alive after 5 s)' if orphan else ''}",
    )
    assert child_lived < 1.0, f"the sync task's child outlived its SIGKILLed worker by {child_lived:.2f} s\n" + (
        outcome.explain()
    )
    assert outcome.ok, outcome.explain()
