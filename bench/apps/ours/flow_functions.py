"""The flow-control benchmark's functions (bench/flow.py): one no-op task with one argument, `k`, that the
keyed manifest limits on; `limited` is only ever declared, never enqueued."""

from __future__ import annotations

from bench.apps import probe
from runtime import task


@task
async def keyed(k: int) -> None:
    await probe.record_done()


@task
async def limited(k: int) -> None:
    await probe.record_done()
