"""Many sleeping runs hold no worker: 1,000 (10,000 with CHAOS_FULL=1) durable runs asleep at once on one worker of
concurrency 5, every one wakes and finishes once (counted from the task's own log), and Redis holds each waiting
run in under 300 bytes (measured and printed): its message, in the queue's delayed set, carries no history."""

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
BYTES_PER_RUN = 300  # Redis memory a waiting run may cost (issue 23); 615 when its message carried its history
# all the data Redis gained per waiting run: its own entry plus what the queue's structures kept from the runs'
# passage (the `started` hash's and the consumer group's tables, the stream's last node): 242-340 bytes a run in
# repeated runs of this test, by when the commits fell, while a waiting run's own entry was 247-248 every time
DATA_PER_RUN = 400
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
    before, used_before = used_by_data(client), int(client.info("memory")["used_memory"])
    start_worker(spawn, app, env)
    seconds = 8.0 if RUNS <= 1_000 else 40.0
    ids = await rt.app.tasks["dozer"].enqueue_many([{"n": n, "seconds": seconds} for n in range(RUNS)])
    started = time.monotonic()

    async def asleep() -> int:
        return sum(1 for run in await rt.store.list(status="waiting", limit=RUNS + 1))

    deadline = time.monotonic() + seconds
    stream = rt.keys.queue("default").stream
    # all asleep at once, on 5 slots: recorded `waiting`, and their stream entries acked and deleted (a run is
    # recorded before its entry is acked: measured in between, entries still in the stream counted as a waiting
    # run's cost, ~30-70 bytes a run by when the commit fell)
    while await asleep() < RUNS or client.xlen(stream):
        assert time.monotonic() < deadline, f"only {await asleep()} of {RUNS} asleep after {seconds} s"
        await asyncio.sleep(0.2)
    per_run = (used_by_data(client) - before) / RUNS
    used = (int(client.info("memory")["used_memory"]) - used_before) / RUNS  # with the connections' buffers
    delayed = client.memory_usage(rt.keys.queue("default").delayed, samples=0) / RUNS
    print(f"\n{RUNS} runs asleep at once after {time.monotonic() - started:.1f} s; Redis {per_run:.0f} bytes each")
    member = client.zrange(rt.keys.queue("default").delayed, 0, 0)
    print(f"(used_memory {used:.0f} bytes each, with the connections' buffers; the delayed set {delayed:.0f})")
    print(f"(a member: {member})")
    await wait_until(lambda: len(events(env, "dozer")) >= RUNS, seconds + 60, f"{RUNS} wake-ups")
    assert Counter(e["n"] for e in events(env, "dozer")) == dict.fromkeys(range(RUNS), 1)
    for run_id in ids[:: max(1, RUNS // 50)]:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    assert delayed < BYTES_PER_RUN, delayed  # a waiting run's own entry
    assert per_run < DATA_PER_RUN, per_run  # nothing else kept per waiting run


def used_by_data(client: redis.Redis) -> int:
    """Redis' used_memory less its clients' buffers: the worker's and our connections' query and output buffers
    (~120 KB at a time, for any number of runs) are no cost of a waiting run."""
    stats = client.memory_stats()
    return int(stats["total.allocated"]) - int(stats["clients.normal"])
