"""Baseline: a bare taskiq app on `RedisStreamBroker`, run by `taskiq worker` (no result backend).

taskiq worker bench.apps.taskiq_app:broker --workers 1 --max-async-tasks 5
"""

from __future__ import annotations

import os

from taskiq_redis import RedisStreamBroker

from bench.apps import probe, producer

# The producer's `startup()` creates the consumer group before any task is added, so pre-filled
# tasks are delivered (the group's start id is "$").
broker = RedisStreamBroker(url=os.environ["REDIS_URL"])


@broker.task(task_name="noop")
async def noop() -> None:
    await probe.record_done()


@broker.task(task_name="sized")
async def sized(blob: str) -> None:
    await probe.record_done()


@broker.task(task_name="stamp")
async def stamp(enqueued_at: float) -> None:
    await probe.record_latency(enqueued_at)


async def _enqueue_noop() -> None:
    await noop.kiq()


async def _enqueue_stamp(enqueued_at: float) -> None:
    await stamp.kiq(enqueued_at)


async def _enqueue_sized(blob: str) -> None:
    await sized.kiq(blob)


if __name__ == "__main__":
    producer.main(
        setup=broker.startup,
        teardown=broker.shutdown,
        enqueue_noop=_enqueue_noop,
        enqueue_stamp=_enqueue_stamp,
        enqueue_sized=_enqueue_sized,
    )
