"""The collector is off while a process starts and back on, with start-up's objects frozen, once it is
ready: a task run right after `runtime worker` says ready sees it on (not after gc_pause.GRACE), and an
emulator child turns it on when it reports, a failed load included."""

from __future__ import annotations

import time

from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, started_runtime, wait_until, worker_env

APP = """
app: gc-test
functions:
  probe: {handler: "gc_tasks:probe", task: {}}
"""
TASKS = (
    MARK
    + """
import gc
from runtime import task

@task
async def probe() -> None:
    mark(fn="probe", enabled=gc.isenabled(), frozen=gc.get_freeze_count())
"""
)


async def test_the_worker_turns_the_collector_back_on_when_ready(tmp_path, redis_url, spawn) -> None:  # type: ignore[no-untyped-def]
    app = write_app(tmp_path, APP, {"gc_tasks.py": TASKS})
    env = worker_env(redis_url, tmp_path)
    started = time.monotonic()
    start_worker(spawn, app, env)
    async with started_runtime(app, env) as rt:
        await rt.app.tasks["probe"].enqueue()
        await wait_until(lambda: bool(events(env, "probe")), 20, "the probe task")
    [seen] = events(env, "probe")
    assert seen["enabled"] is True
    assert seen["frozen"] > 10_000  # what start-up built is out of every later collection
    assert time.monotonic() - started < 20


def test_an_emulator_child_turns_the_collector_back_on_when_it_reports_even_an_error() -> None:
    """A generation whose app fails to load runs no worker: its report is where start-up ends."""
    import gc
    import os

    from emulator.child import _report

    read, write = os.pipe()
    gc.disable()
    try:
        _report(write, 'error "boom"')
        assert gc.isenabled()
        assert os.read(read, 100) == b'error "boom"\n'
    finally:
        gc.unfreeze()
        gc.enable()
        os.close(read)
        os.close(write)
