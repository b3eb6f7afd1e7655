"""Two schedulers fire each cron time once: two Runtimes (separate connections) tick concurrently at the
same crafted times, and each due minute is enqueued exactly once between them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from runtime.scheduler.scheduler import Scheduler
from tests.chaos.harness import FULL, SUMMARIES, client

pytestmark = pytest.mark.chaos


async def test_two_schedulers_fire_each_cron_time_once(chaos_app, redis_url, tmp_path):
    minutes = 240 if FULL else 30
    database_url = f"sqlite:///{tmp_path}/runs.db"
    async with client(chaos_app, redis_url, database_url) as one, client(chaos_app, redis_url, database_url) as two:
        first, second = Scheduler(one), Scheduler(two)
        second.identity = "second"
        start = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
        await asyncio.gather(first.tick(start), second.tick(start))  # first start: both remember, none fires
        fired: Counter[int] = Counter()
        for minute in range(1, minutes + 1):
            now = start + timedelta(minutes=minute)
            a, b = await asyncio.gather(first.tick(now), second.tick(now))
            fired[minute] = len(a) + len(b)
        runs = await one.store.list(function="cron_job", limit=10 * minutes)
    doubled = [m for m, n in fired.items() if n > 1]
    missed = [m for m, n in fired.items() if n == 0]
    line = (
        f"chaos two-schedulers: minutes={minutes} fires={sum(fired.values())} double_fires={len(doubled)} "
        f"missed={len(missed)} records={len(runs)}"
    )
    SUMMARIES.append(line)
    print(line)
    assert not doubled and not missed and len(runs) == minutes, line
