"""Baseline: Celery on its Redis broker, results ignored; one worker process with a thread pool.

celery -A bench.apps.celery_app worker -P threads -c 5 --without-gossip --without-mingle --without-heartbeat
"""

from __future__ import annotations

import os

from celery import Celery

from bench.apps import probe, producer

app = Celery("bench", broker=os.environ["REDIS_URL"])
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop() -> None:
    probe.record_done_sync()


@app.task(name="stamp")
def stamp(enqueued_at: float) -> None:
    probe.record_latency_sync(enqueued_at)


async def _nothing() -> None:
    return None


async def _enqueue_noop() -> None:
    noop.delay()


async def _enqueue_stamp(enqueued_at: float) -> None:
    stamp.delay(enqueued_at)


if __name__ == "__main__":
    producer.main(setup=_nothing, teardown=_nothing, enqueue_noop=_enqueue_noop, enqueue_stamp=_enqueue_stamp)
