"""Sync (`def`) tasks under a real `runtime worker`: their child processes die with the worker, their
timeouts count from the function's start (not the process's), and a killed child is replaced warm."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runtime import Runtime
from tests.conftest import write_app
from tests.runtime.workers import start_worker, started_runtime

MODULE = f"sync_tasks_{uuid.uuid4().hex[:8]}"

SOURCE = """
import json, os, time
from runtime import task

IMPORTED = time.time()  # in a sync child: when the pool started it (before any task, if it was warm)

@task
def ticker(path: str, seconds: float) -> None:
    with open(path, "a") as out:
        out.write(f"pid {os.getpid()}\\n")
    end = time.time() + seconds
    while time.time() < end:
        with open(path, "a") as out:
            out.write("tick\\n")
        time.sleep(0.1)

@task
def quick(n: int) -> int:
    return n

@task
def stuck(seconds: float) -> None:
    time.sleep(seconds)

@task
def when() -> dict:
    return {"started": time.time(), "imported": IMPORTED, "pid": os.getpid()}
"""

MANIFEST = f"""
app: sync-tasks-test
defaults: {{retries: 3, timeout: 5m, concurrency: 2}}
functions:
  ticker: {{handler: "{MODULE}:ticker", task: {{timeout: 30s, retries: 0}}}}
  quick: {{handler: "{MODULE}:quick", task: {{timeout: 500ms, retries: 3}}}}
  stuck: {{handler: "{MODULE}:stuck", task: {{timeout: 500ms, retries: 0}}}}
  when: {{handler: "{MODULE}:when", task: {{timeout: 500ms, retries: 0}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db",
        "LEASE_SECONDS": "10",
        "SHUTDOWN_TIMEOUT": "5",
    }


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime


@pytest.fixture
def busy_cpu() -> Iterator[None]:
    """One process spinning on a core for the test's length (the machine is under load)."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        spinner.kill()
        spinner.wait()


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an exited child nobody has reaped yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = next(line for line in status.splitlines() if line.startswith("State:"))
    return "Z" not in state.split()[1]


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
async def test_a_sync_tasks_process_dies_with_its_worker(spawn, app, env, rt, tmp_path):
    worker = start_worker(spawn, app, env)
    ticks = tmp_path / "ticks.txt"
    await rt.app.tasks["ticker"].enqueue(path=str(ticks), seconds=30)
    deadline = time.monotonic() + 20
    while not (ticks.exists() and ticks.read_text().count("tick") >= 2) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    pid = int(ticks.read_text().splitlines()[0].split()[1])
    assert alive(pid)

    worker.signal(signal.SIGKILL)
    worker.wait(5)
    killed = time.monotonic()
    while alive(pid) and time.monotonic() - killed < 3:
        await asyncio.sleep(0.02)
    gone_after = time.monotonic() - killed
    assert not alive(pid), "the sync task's process outlived its worker"
    assert gone_after < 1.0
    size = ticks.stat().st_size
    await asyncio.sleep(0.5)
    assert ticks.stat().st_size == size  # nothing ran on after the worker died


async def quick_runs_all_succeed_first_time(rt: Runtime, count: int) -> None:
    ids = [await rt.app.tasks["quick"].enqueue(n=n) for n in range(count)]
    runs = [await rt.wait(run_id, timeout=60) for run_id in ids]
    assert [(r.status, r.result, r.attempts) for r in runs] == [("succeeded", n, 1) for n in range(count)], [
        r.history for r in runs if r.attempts != 1
    ]


async def test_short_sync_timeouts_do_not_count_process_start_up(spawn, app, env, rt):
    start_worker(spawn, app, env)
    await quick_runs_all_succeed_first_time(rt, 6)


async def test_short_sync_timeouts_hold_on_a_loaded_machine(spawn, app, env, rt, busy_cpu):
    start_worker(spawn, app, env)
    await quick_runs_all_succeed_first_time(rt, 6)


async def test_the_task_after_a_timeout_kill_starts_on_a_warm_process(spawn, app, env, rt):
    worker = start_worker(spawn, app, env)
    # two at once (the worker's concurrency): both children have started and imported the handlers
    first = [await rt.app.tasks["when"].enqueue() for _ in range(2)]
    assert [(await rt.wait(run_id, timeout=60)).status for run_id in first] == ["succeeded"] * 2
    stuck = await rt.wait(await rt.app.tasks["stuck"].enqueue(seconds=5), timeout=30)
    assert (stuck.status, stuck.last_error) == ("failed", "timed out after 500ms")

    enqueued = time.time()
    run = await rt.wait(await rt.app.tasks["when"].enqueue(), timeout=30)
    assert run.status == "succeeded", run.last_error
    latency = run.result["started"] - enqueued
    print(f"enqueue -> start after a timeout kill: {latency * 1000:.0f} ms")
    assert run.result["imported"] < enqueued  # its process had imported the handler before the task came
    assert latency < 1.0
    assert "Traceback" not in worker.output


async def test_a_sync_task_reports_its_exception_with_a_traceback_not_a_hang(spawn, app, env, rt, tmp_path):
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["ticker"].enqueue(path=str(tmp_path / "no" / "such" / "dir"), seconds=1))
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.startswith("FileNotFoundError: ")
    assert json.dumps(run.history)  # the attempt is recorded
