"""Durable sleeps on real workers: a sleeping run is `waiting`, holds no worker slot and shows what it waits
for; it resumes when its time comes without running its saved steps again, also when every process was
stopped across its wake-up time; a waiting run can be cancelled. Counted from the tasks' side-effect log."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime import Context, Runtime
from tests.conftest import free_port, write_app
from tests.runtime.workers import MARK, events, start_worker

MODULE = f"sleep_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import time
from datetime import datetime, timedelta, UTC
from runtime import Context, task

def stamp(tag):
    mark(fn="body", step=tag)
    return time.time()

@task
async def napper(ctx: Context, seconds: float) -> dict:
    mark(fn="napper", attempt=ctx.attempt)
    before = await ctx.step.run("before", stamp, "before")
    try:
        await ctx.sleep("nap", timedelta(seconds=seconds))
    except Exception:
        mark(fn="swallowed")  # a sleep is not an error a broad except catches
        raise
    after = await ctx.step.run("after", stamp, "after")
    return {"slept": after - before}

@task
async def until(ctx: Context, at: float) -> float:
    await ctx.sleep_until("alarm", datetime.fromtimestamp(at, UTC))
    return await ctx.step.run("woke", stamp, "woke")

@task
async def quick(n: int) -> None:
    mark(fn="quick", n=n)

@task
async def dozy(ctx: Context) -> int:
    await ctx.sleep("first", 0.3)
    if ctx.attempt == 1:
        raise RuntimeError("woke up grumpy")
    await ctx.sleep("second", 0.3)
    return ctx.attempt
"""
)

MANIFEST = f"""
app: sleep-test
defaults: {{concurrency: 1}}
functions:
  napper: {{handler: "{MODULE}:napper", task: {{}}}}
  until: {{handler: "{MODULE}:until", task: {{}}}}
  quick: {{handler: "{MODULE}:quick", task: {{}}}}
  dozy: {{handler: "{MODULE}:dozy", task: {{retries: 1, backoff: {{base: 50ms, max: 100ms}}}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("sleep"), MANIFEST, {f"{MODULE}.py": SOURCE})


async def status_of(rt: Runtime, run_id: str) -> str:
    run = await rt.store.get(run_id)
    return run.status if run is not None else "missing"


async def test_a_sleeping_run_waits_without_its_worker_and_resumes_on_time(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    start_worker(spawn, app, env, WORKER_HEALTH_PORT=str(port))  # one slot: concurrency 1
    run_id = await rt.app.tasks["napper"].enqueue(seconds=3)
    for _ in range(200):
        if await status_of(rt, run_id) == "waiting":
            break
        await asyncio.sleep(0.05)
    run = await rt.store.get(run_id)
    assert run is not None and run.status == "waiting", run
    assert run.waiting_for is not None and run.waiting_for.startswith("sleep 'nap' until ")
    async with httpx.AsyncClient() as client:  # /metrics: the waiting run, and the steps its worker saved
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    assert 'firstsip_runs{function="napper",status="waiting"} 1.0' in metrics
    assert 'firstsip_steps_saved_total{status="succeeded"} 1.0' in metrics  # "before"
    # the one slot is free: ordinary runs go through while the sleeper waits
    quick = [await rt.app.tasks["quick"].enqueue(n=n) for n in range(5)]
    for quick_id in quick:
        assert (await rt.wait(quick_id, timeout=10)).status == "succeeded"
    assert await status_of(rt, run_id) == "waiting"
    done = await rt.wait(run_id, timeout=30)
    assert (done.status, done.attempts, done.waiting_for) == ("succeeded", 1, None)
    assert 3.0 <= done.result["slept"] < 4.0, done.result  # resumed within 1 s of its time
    assert [e["attempt"] for e in events(env, "napper")] == [1, 1]  # the code before the sleep ran again ...
    assert Counter(e["step"] for e in events(env, "body")) == Counter({"before": 1, "after": 1})  # ... steps did not
    assert events(env, "swallowed") == []
    assert [h.get("waited_for", "")[:16] for h in done.history] == ["sleep 'nap' unti", ""]


async def test_a_run_asleep_while_every_process_is_down_resumes_once_one_starts(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker(spawn, app, env)
    wake = time.time() + 2
    run_id = await rt.app.tasks["until"].enqueue(at=wake)
    for _ in range(200):
        if await status_of(rt, run_id) == "waiting":
            break
        await asyncio.sleep(0.05)
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    await asyncio.sleep(max(0.0, wake - time.time()) + 1.5)  # its time passes with no worker up
    assert await status_of(rt, run_id) == "waiting"
    start_worker(spawn, app, env)
    started = time.time()  # the worker says it is ready
    done = await rt.wait(run_id, timeout=20)
    assert done.status == "succeeded"
    assert done.result - started < 1.0, done.result - started  # within 1 s of a worker being up
    assert [e["step"] for e in events(env, "body")] == ["woke"]


async def test_a_waiting_run_can_be_cancelled_and_never_wakes(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["napper"].enqueue(seconds=1.5)
    for _ in range(200):
        if await status_of(rt, run_id) == "waiting":
            break
        await asyncio.sleep(0.05)
    assert (await rt.cancel(run_id)).status == "cancelled"
    await asyncio.sleep(3)
    run = await rt.store.get(run_id)
    assert run is not None and run.status == "cancelled"
    assert [e["step"] for e in events(env, "body")] == ["before"]  # it never went on


async def test_bad_sleeps_are_errors_that_name_the_problem() -> None:
    ctx = Context("r" * 32, 1)
    with pytest.raises(ValueError, match="sleep 'x': a duration is 0 to 31622400 seconds"):
        await ctx.sleep("x", -1)
    with pytest.raises(ValueError, match="sleep 'x': a duration is 0 to 31622400 seconds"):
        await ctx.sleep("x", float("nan"))
    with pytest.raises(TypeError, match="sleep_until 'y': when must be a datetime, not int"):
        await ctx.sleep_until("y", 5)  # type: ignore[arg-type]


async def test_a_run_that_sleeps_fails_and_sleeps_again_lists_every_attempt(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    """Its message carries no history: each wait and each attempt is added to its record, which lists them all."""
    start_worker(spawn, app, env)
    done = await rt.wait(await rt.app.tasks["dozy"].enqueue(), timeout=30)
    assert (done.status, done.attempts, done.result, done.last_error) == ("succeeded", 2, 2, None)
    steps = [(h["attempt"], h.get("waited_for", "")[:14], h["error"]) for h in done.history]
    assert steps == [
        (1, "sleep 'first' ", None),
        (1, "", "RuntimeError: woke up grumpy"),
        (2, "sleep 'second'", None),
        (2, "", None),
    ]
    assert len({h["started_at"] for h in done.history}) == 4
