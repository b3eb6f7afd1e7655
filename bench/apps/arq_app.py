"""Baseline: arq, `max_jobs=5`, results not kept, polling every 10 ms.

    arq bench.apps.arq_app.WorkerSettings

arq polls its queue (a sorted set) every `poll_delay` (0.5 s by default) and starts at most
`queue_read_limit` jobs per poll, which caps a default worker at a couple of hundred tasks/s and
puts ~250 ms on an idle queue's latency; 10 ms is arq's fastest sensible setting, so we use it.
arq pins redis-py < 6 while taskiq-redis needs >= 8, so arq runs from its own virtualenv
(see `bench/systems.py`).
"""

from __future__ import annotations

import os
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.apps import probe, producer

REDIS = RedisSettings.from_dsn(os.environ["REDIS_URL"])


async def noop(ctx: dict[str, Any]) -> None:
    await probe.record_done()


async def stamp(ctx: dict[str, Any], enqueued_at: float) -> None:
    await probe.record_latency(enqueued_at)


class WorkerSettings:
    functions = [noop, stamp]
    redis_settings = REDIS
    max_jobs = 5
    keep_result = 0
    poll_delay = 0.01


_pool: list[ArqRedis] = []


async def _setup() -> None:
    _pool.append(await create_pool(REDIS))


async def _teardown() -> None:
    await _pool[0].aclose()


async def _enqueue_noop() -> None:
    await _pool[0].enqueue_job("noop")


async def _enqueue_stamp(enqueued_at: float) -> None:
    await _pool[0].enqueue_job("stamp", enqueued_at)


if __name__ == "__main__":
    producer.main(setup=_setup, teardown=_teardown, enqueue_noop=_enqueue_noop, enqueue_stamp=_enqueue_stamp)
