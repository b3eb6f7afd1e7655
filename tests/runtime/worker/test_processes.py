"""`runtime worker --processes N`: N real worker processes under one supervisor, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from tests.conftest import free_port, write_app
from tests.runtime.workers import events, started_runtime, worker_env

MODULE = f"procs_{uuid.uuid4().hex[:8]}"

SOURCE = """
import asyncio, json, os, time
from runtime import task

def mark(**event):
    with open(os.environ["TEST_LOG"], "a") as log:
        log.write(json.dumps(event | {"t": time.time(), "pid": os.getpid()}) + "\\n")

@task
async def work(n: int, seconds: float = 0.05) -> int:
    mark(fn="work", n=n, phase="start")
    await asyncio.sleep(seconds)
    mark(fn="work", n=n, phase="end")
    return n
"""

MANIFEST = f"""
app: procs-test
defaults: {{retries: 3, timeout: 1m, concurrency: 2}}
functions:
  work: {{handler: "{MODULE}:work", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, WORKER_HEALTH_PORT=str(free_port()))


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime


def get(env: dict[str, str], path: str) -> tuple[int, str]:
    url = f"http://127.0.0.1:{env['WORKER_HEALTH_PORT']}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def ready(env: dict[str, str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = await asyncio.to_thread(get, env, "/health")
        except OSError:
            status, body = 0, ""
        if status == 200:
            return dict(json.loads(body))
        await asyncio.sleep(0.1)
    raise AssertionError(f"the supervisor's /health never became 200: {body}")


def start(spawn: Any, app: Path, env: dict[str, str], n: int = 2) -> Any:
    return spawn(["runtime", "worker", "--manifest", str(app), "--processes", str(n)], app.parent, env)


async def test_two_processes_both_take_tasks_and_health_aggregates_them(spawn, app, env, rt):
    supervisor = start(spawn, app, env)
    body = await ready(env)
    assert [p["ready"] for p in body["processes"]] == [True, True]
    pids = {p["pid"] for p in body["processes"]}
    ids = [await rt.app.tasks["work"].enqueue(n=i, seconds=0.3) for i in range(12)]
    runs = [await rt.wait(run_id, timeout=30) for run_id in ids]
    assert {run.status for run in runs} == {"succeeded"}
    assert {e["pid"] for e in events(env)} == pids  # each child ran some (concurrency 2 each, 0.3 s tasks)
    status, live = await asyncio.to_thread(get, env, "/health/live")
    assert status == 200 and json.loads(live)["processes"] == 2
    status, metrics = await asyncio.to_thread(get, env, "/metrics")
    assert status == 200
    assert 'process="0"' in metrics and 'process="1"' in metrics
    assert supervisor.process.poll() is None


async def test_a_killed_child_is_restarted_and_no_task_is_lost(spawn, app, env, rt):
    supervisor = start(spawn, app, env)
    body = await ready(env)
    victim = body["processes"][0]["pid"]
    ids = [await rt.app.tasks["work"].enqueue(n=i, seconds=0.2) for i in range(20)]
    while not any(e["pid"] == victim for e in events(env)):
        await asyncio.sleep(0.02)
    os.kill(victim, signal.SIGKILL)
    supervisor.wait_for("worker process 0 (pid")
    supervisor.wait_for("exited with code -9; restarting it in 1 s")
    ids += [await rt.app.tasks["work"].enqueue(n=i, seconds=0.05) for i in range(20, 30)]
    runs = [await rt.wait(run_id, timeout=40) for run_id in ids]  # the killed child's entries: after the lease
    assert {run.status for run in runs} == {"succeeded"}
    assert {e["n"] for e in events(env) if e["phase"] == "end"} == set(range(30))
    body = await ready(env)
    assert body["processes"][0]["restarts"] == 1 and body["processes"][0]["pid"] != victim


async def test_sigterm_drains_every_child_and_exits_cleanly(spawn, app, env, rt):
    supervisor = start(spawn, app, env)
    await ready(env)
    ids = [await rt.app.tasks["work"].enqueue(n=i, seconds=1.5) for i in range(4)]
    deadline = time.monotonic() + 15
    while len({e["pid"] for e in events(env)}) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    started = {e["n"] for e in events(env) if e["phase"] == "start"}
    supervisor.signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.wait, 30) == 0
    ended = {e["n"] for e in events(env) if e["phase"] == "end"}
    assert started and started <= ended  # every task running at SIGTERM finished
    for run_id in ids:
        run = await rt.store.get(run_id)
        assert run is not None and run.status in ("succeeded", "queued")
    assert "stopping 2 worker process(es)" in supervisor.output
    assert "did not stop in time" not in supervisor.output


def test_a_bad_process_count_is_one_line(spawn, app, env):
    worker = spawn(["runtime", "worker", "--manifest", str(app), "--processes", "0"], app.parent, env)
    assert worker.wait(20) == 1
    assert worker.output == "error: --processes must be 1 or more, not 0"
