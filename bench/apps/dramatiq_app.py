"""Baseline: Dramatiq on its Redis broker, default middleware; one worker process with 5 threads.

dramatiq -p 1 -t 5 bench.apps.dramatiq_app
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.apps import probe, producer

broker = RedisBroker(url=os.environ["REDIS_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name="noop")
def noop() -> None:
    probe.record_done_sync()


@dramatiq.actor(actor_name="stamp")
def stamp(enqueued_at: float) -> None:
    probe.record_latency_sync(enqueued_at)


async def _nothing() -> None:
    return None


async def _enqueue_noop() -> None:
    noop.send()


async def _enqueue_stamp(enqueued_at: float) -> None:
    stamp.send(enqueued_at)


if __name__ == "__main__":
    producer.main(setup=_nothing, teardown=_nothing, enqueue_noop=_enqueue_noop, enqueue_stamp=_enqueue_stamp)
