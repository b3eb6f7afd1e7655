"""The scheduler: cron functions fire once per due time, UTC; a second scheduler waits its turn."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from runtime.connections import Runtime
from runtime.scheduler import Scheduler
from runtime.settings import Settings
from tests.conftest import write_app

MODULE = f"cron_{uuid.uuid4().hex[:8]}"


async def runtime_for(tmp_path, redis_url) -> Runtime:  # type: ignore[no-untyped-def]
    manifest = write_app(
        tmp_path,
        f"""
app: cron-test
functions:
  nightly: {{handler: "{MODULE}:nightly", task: {{schedule: "0 6 * * *"}}}}
  plain: {{handler: "{MODULE}:plain", task: {{}}}}
""",
        {
            f"{MODULE}.py": (
                "from runtime import task\n"
                "@task\nasync def nightly() -> None: ...\n"
                "@task\nasync def plain() -> None: ...\n"
            )
        },
    )
    runtime = Runtime.from_manifest(manifest, Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db"))
    await runtime.start()
    return runtime


async def test_cron_fires_once_per_due_time(tmp_path, redis_url):
    runtime = await runtime_for(tmp_path, redis_url)
    scheduler = Scheduler(runtime)
    assert list(scheduler.schedules) == ["nightly"]
    assert await scheduler.tick(datetime(2026, 1, 1, 5, 0, tzinfo=UTC)) == []  # first start: remembers, no fire
    assert await scheduler.tick(datetime(2026, 1, 1, 5, 59, tzinfo=UTC)) == []
    fired = await scheduler.tick(datetime(2026, 1, 1, 6, 0, 30, tzinfo=UTC))
    assert len(fired) == 1
    assert await scheduler.tick(datetime(2026, 1, 1, 6, 1, tzinfo=UTC)) == []  # same due time: not again
    restarted = Scheduler(runtime)  # a restart remembers the last fire time in Redis
    assert await restarted.tick(datetime(2026, 1, 1, 7, 0, tzinfo=UTC)) == []
    assert len(await restarted.tick(datetime(2026, 1, 2, 6, 0, tzinfo=UTC))) == 1
    runs = await runtime.store.list(function="nightly")
    assert len(runs) == 2 and {r.status for r in runs} == {"queued"}
    await runtime.stop()


async def test_only_one_scheduler_holds_the_lock(tmp_path, redis_url):
    runtime = await runtime_for(tmp_path, redis_url)
    first, second = Scheduler(runtime), Scheduler(runtime)
    second.identity = "other"
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    await asyncio.sleep(1.0)
    assert [first.leader, second.leader].count(True) == 1
    leader, follower = (first, second) if first.leader else (second, first)
    leader.stop()
    await asyncio.sleep(2.5)  # the lock is released on stop; the follower takes over
    assert follower.leader
    follower.stop()
    await asyncio.gather(*tasks)
    await runtime.stop()
