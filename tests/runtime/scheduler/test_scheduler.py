"""The scheduler: cron functions fire once per due time, UTC; a second scheduler waits its turn."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from runtime.app.connections import Runtime
from runtime.scheduler.scheduler import Scheduler
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


async def test_a_fire_is_never_early(tmp_path, redis_url):
    runtime = await runtime_for(tmp_path, redis_url)
    scheduler = Scheduler(runtime)
    await scheduler.tick(datetime(2026, 1, 1, 5, 0, tzinfo=UTC))
    # 0.7 s before the due second: the old code fired here (croniter from now + 1 s)
    assert await scheduler.tick(datetime(2026, 1, 1, 5, 59, 59, 300000, tzinfo=UTC)) == []
    assert len(await scheduler.tick(datetime(2026, 1, 1, 6, 0, 0, tzinfo=UTC))) == 1
    # the loop sleeps until just after the next due second
    wait = scheduler.until_next_due(datetime(2026, 1, 2, 5, 59, 59, 800000, tzinfo=UTC))
    assert 0.2 <= wait < 0.21
    await runtime.stop()


async def test_a_failing_schedule_never_stops_another_and_a_failed_fire_is_retried_once(tmp_path, redis_url):
    runtime = await runtime_for(tmp_path, redis_url)
    scheduler = Scheduler(runtime)
    scheduler.schedules = {"broken": "0 6 * * *", **scheduler.schedules}  # not a task: its fire raises
    await scheduler.tick(datetime(2026, 1, 1, 5, 0, tzinfo=UTC))
    await runtime.broker.redis.set(runtime.keys.cron_last("broken"), 0)
    real_submit = runtime.submit
    failures = 1

    async def flaky_submit(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal failures
        rows = await real_submit(*args, **kwargs)  # queued, but the answer is lost once
        if failures:
            failures -= 1
            raise ConnectionError("Redis did not answer")
        return rows

    runtime.submit = flaky_submit  # type: ignore[method-assign]
    assert await scheduler.tick(datetime(2026, 1, 1, 6, 0, 1, tzinfo=UTC)) == []  # both failed this tick
    assert "broken" in scheduler.failing and "nightly" in scheduler.failing
    # retried: its guard shows it was queued already (the answer was lost, not the fire): nothing more
    assert await scheduler.tick(datetime(2026, 1, 1, 6, 0, 2, tzinfo=UTC)) == []
    assert "nightly" not in scheduler.failing
    assert await scheduler.tick(datetime(2026, 1, 1, 6, 0, 3, tzinfo=UTC)) == []
    assert len(await runtime.store.list(function="nightly")) == 1
    assert await runtime.broker.redis.xlen(runtime.keys.queue("default").stream) == 1  # queued exactly once
    await runtime.stop()


def test_two_schedulers_at_once_fire_once(tmp_path, redis_url):
    import subprocess
    import sys

    script = f"""
import asyncio, sys
from datetime import UTC, datetime, timedelta
sys.path.insert(0, {str(tmp_path)!r})
from runtime.app.connections import Runtime
from runtime.scheduler.scheduler import Scheduler
from runtime.settings import Settings

async def main():
    rt = Runtime.from_manifest({str(tmp_path / "manifest.yaml")!r},
                               Settings(redis_url={redis_url!r}, database_url="sqlite:///{tmp_path}/r.db"))
    await rt.start()
    scheduler = Scheduler(rt)
    for day in range(1, 11):
        await scheduler.tick(datetime(2026, 1, day, 6, 0, 0, 1000 * day, tzinfo=UTC))
    await rt.stop()

asyncio.run(main())
"""
    asyncio.run(_prime(tmp_path, redis_url))
    procs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [p.wait(60) for p in procs] == [0, 0]

    async def count() -> tuple[int, int]:
        runtime = await runtime_for(tmp_path, redis_url)
        runs = await runtime.store.list(function="nightly")
        length = await runtime.broker.redis.xlen(runtime.keys.queue("default").stream)
        await runtime.stop()
        return len(runs), length

    assert asyncio.run(count()) == (10, 10)  # one run and one message per day


async def _prime(tmp_path, redis_url):  # type: ignore[no-untyped-def]
    runtime = await runtime_for(tmp_path, redis_url)
    await Scheduler(runtime).tick(datetime(2025, 12, 31, 7, 0, tzinfo=UTC))
    await runtime.stop()
