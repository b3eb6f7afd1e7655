"""Many sleeping runs hold no worker: 1,000 (10,000 with CHAOS_FULL=1) durable runs asleep at once on one worker of
concurrency 5, every one wakes and finishes once (counted from the task's own log), and Redis holds each waiting
run in a few hundred bytes (measured and printed)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from runtime import Runtime
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, wait_until

pytestmark = pytest.mark.slow

RUNS = 10_000 if os.environ.get("CHAOS_FULL") == "1" else 1_000
MODULE = f"many_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
from runtime import Context, task

@task
async def dozer(ctx: Context, n: int, seconds: float) -> int:
    await ctx.sleep("doze", seconds)
    mark(fn="dozer", n=n)
    return n
"""
)

MANIFEST = f"""
app: many-waiting
defaults: {{concurrency: 5}}
functions:
  dozer: {{handler: "{MODULE}:dozer", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("many"), MANIFEST, {f"{MODULE}.py": SOURCE})


async def test_a_thousand_sleeping_runs_hold_no_worker_and_all_wake_once(
    spawn: Any, app: Path, env, rt: Runtime
) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis.from_url(env["REDIS_URL"])
    before = int(client.info("memory")["used_memory"])
    start_worker(spawn, app, env)
    seconds = 8.0 if RUNS <= 1_000 else 40.0
    ids = await rt.app.tasks["dozer"].enqueue_many([{"n": n, "seconds": seconds} for n in range(RUNS)])
    started = time.monotonic()

    async def asleep() -> int:
        return sum(1 for run in await rt.store.list(status="waiting", limit=RUNS + 1))

    deadline = time.monotonic() + seconds
    while await asleep() < RUNS:  # all asleep at once, on 5 slots
        assert time.monotonic() < deadline, f"only {await asleep()} of {RUNS} asleep after {seconds} s"
        await asyncio.sleep(0.2)
    per_run = (int(client.info("memory")["used_memory"]) - before) / RUNS
    print(f"\n{RUNS} runs asleep at once after {time.monotonic() - started:.1f} s; Redis {per_run:.0f} bytes each")
    await wait_until(lambda: len(events(env, "dozer")) >= RUNS, seconds + 60, f"{RUNS} wake-ups")
    assert Counter(e["n"] for e in events(env, "dozer")) == dict.fromkeys(range(RUNS), 1)
    for run_id in ids[:: max(1, RUNS // 50)]:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    assert per_run < 2_000, per_run
