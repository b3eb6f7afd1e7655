"""Counts that tell the truth, with a real `runtime worker`: the same queue depths in `runtime queues`,
`GET /api/queues`, `GET /api/stats` and `/metrics`, where `running` means a task is executing (a stream entry
a worker read and handed back, as it does from a paused queue, is `waiting`); cancelled runs in the
counts; one time format in every JSON answer; and the `unique` window as the contract words it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from runtime import Runtime
from runtime.dashboard.app import create_dashboard_app
from runtime.ops import operations
from runtime.ops.metrics import render
from runtime.settings import Settings
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, wait_until, worker_env

MODULE = f"counts_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio, os
from runtime import task

@task
async def work(n: int) -> int:
    mark(fn="work", n=n)
    return n

@task
async def nap(seconds: float, until: str = "") -> None:
    mark(fn="nap", phase="start")
    for _ in range(int(seconds * 20)):  # `seconds`, or until the test creates the file `until`
        if until and os.path.exists(until):
            return
        await asyncio.sleep(0.05)

@task
async def flaky(tag: str) -> str:
    mark(fn="flaky", tag=tag)
    await asyncio.sleep(0.2)
    if len([line for line in open(os.environ["TEST_LOG"]) if tag in line]) == 1:
        raise RuntimeError("the first attempt fails")
    return tag

@task
async def nightly() -> None:
    pass

@task
async def briefing(briefing_id: int) -> int:
    return briefing_id

@task
async def briefing_1s(briefing_id: int) -> int:
    return briefing_id
"""
)

MANIFEST = f"""
app: counts-test
defaults: {{retries: 0, concurrency: 1}}
functions:
  work: {{handler: "{MODULE}:work", task: {{}}}}
  nap: {{handler: "{MODULE}:nap", task: {{}}}}
  flaky: {{handler: "{MODULE}:flaky", task: {{retries: 1, backoff: {{base: 1s, max: 1s}}}}}}
  nightly: {{handler: "{MODULE}:nightly", task: {{schedule: "0 3 * * *"}}}}
  briefing: {{handler: "{MODULE}:briefing", task: {{unique: 10m}}}}
  briefing_1s: {{handler: "{MODULE}:briefing_1s", task: {{unique: 1s}}}}
"""

STATES = ("waiting", "running", "scheduled", "retrying", "dead")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("counts"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, SHUTDOWN_TIMEOUT="5", LOG_LEVEL="info")


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    os.environ["TEST_LOG"] = env["TEST_LOG"]
    settings = Settings(
        redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"], lease_seconds=env["LEASE_SECONDS"]
    )
    runtime = Runtime.from_manifest(app, settings)
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.fixture
async def api(rt: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_dashboard_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
        yield client


def cli(app: Path, env: dict[str, str], *args: str) -> Any:
    """`runtime ARGS --json`, as a user runs it, parsed."""
    command = [sys.executable, "-m", "runtime.cli", *args, "--manifest", str(app), "--json"]
    done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


async def depths_everywhere(rt: Runtime, api: httpx.AsyncClient, app: Path, env: dict[str, str]) -> list[Any]:
    """The default queue's depths as each face shows them: `runtime queues --json`, /api/queues, /api/stats
    (its queue and its totals) and /metrics."""
    queues = cli(app, env, "queues")["default"]
    from_api = (await api.get("/api/queues")).json()["default"]
    stats = (await api.get("/api/stats")).json()
    text = (await render(rt))[0].decode()
    gauges = {
        sample.labels["state"]: int(sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "firstsip_queue_depth" and sample.labels["queue"] == "default"
    }
    return [
        {state: queues[state] for state in STATES},
        {state: from_api[state] for state in STATES},
        {state: stats["queues"]["default"][state] for state in STATES},
        {state: stats["queue"][state] for state in STATES},
        gauges,
    ]


async def test_a_paused_queue_counts_what_a_worker_handed_back_as_waiting_and_running_as_executing(
    spawn, app, env, rt, api, tmp_path
) -> None:
    start_worker(spawn, app, env)
    woken = tmp_path / "wake-the-nap"
    nap = await rt.app.tasks["nap"].enqueue(seconds=30, until=str(woken))
    await wait_until(lambda: len(events(env, "nap")) == 1, 20, "the nap to start")
    await operations.pause(rt, "default")
    ids = await rt.app.tasks["work"].enqueue_many([{"n": n} for n in range(6)])
    await asyncio.sleep(2.5)  # the worker reads ahead behind its busy runner, then hands what it read back
    expected = {"waiting": 6, "running": 1, "scheduled": 0, "retrying": 0, "dead": 0}
    assert await depths_everywhere(rt, api, app, env) == [expected] * 5

    woken.touch()  # the nap ends now, not after a fixed time that has to cover the checks above
    assert (await rt.wait(nap, timeout=20)).status == "succeeded"
    await asyncio.sleep(1.0)
    expected = {"waiting": 6, "running": 0, "scheduled": 0, "retrying": 0, "dead": 0}
    assert await depths_everywhere(rt, api, app, env) == [expected] * 5
    assert events(env, "work") == []
    assert {(await rt.store.get(run_id)).status for run_id in ids} == {"queued"}  # type: ignore[union-attr]
    listed = cli(app, env, "runs", "--function", "work")
    assert [run["status"] for run in listed] == ["queued"] * 6

    await operations.resume(rt, "default")
    for run_id in ids:
        assert (await rt.wait(run_id, timeout=20)).status == "succeeded"
    expected = {"waiting": 0, "running": 0, "scheduled": 0, "retrying": 0, "dead": 0}
    await asyncio.sleep(0.5)
    assert await depths_everywhere(rt, api, app, env) == [expected] * 5


async def test_each_attempt_names_its_worker_and_a_run_starts_with_its_first_attempt(spawn, app, env, rt, api) -> None:
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["flaky"].enqueue(tag=uuid.uuid4().hex)
    run = await rt.wait(run_id, timeout=30)
    assert (run.status, run.attempts) == ("succeeded", 2)
    first, second = run.history
    # the run started with its first attempt (it was the last one's start); the backoff is in its duration
    assert run.started_at is not None and first["started_at"] < second["started_at"]
    assert abs(run.started_at.replace(tzinfo=UTC).timestamp() - first["started_at"]) < 0.001
    shown = (await api.get(f"/api/runs/{run_id}")).json()
    assert shown["started_at"] == shown["history"][0]["started_at"]
    assert shown["duration_ms"] == run.duration_ms() and shown["duration_ms"] >= 500 + 400
    assert shown["time_in_attempts_ms"] == round(first["duration_ms"] + second["duration_ms"], 2)
    assert 400 <= shown["time_in_attempts_ms"] < shown["duration_ms"]

    [worker] = (await api.get("/api/workers")).json()
    for attempt in (first, second):
        assert (attempt["worker"], attempt["host"], attempt["pid"]) == (
            worker["name"],
            socket.gethostname(),
            worker["pid"],
        )

    text = cli_text(app, env, "runs", "show", run_id)
    assert f" on {worker['name']} ({socket.gethostname()}, pid {worker['pid']})\n" in text
    assert f"duration   {shown['duration_ms']:.0f} ms" in text
    assert cli(app, env, "runs", "show", run_id) == shown


ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
TIME_KEYS = {"heartbeat", "started", "minute", "next_fire"}


def times_in(value: Any, key: str = "") -> list[Any]:
    """Every time in a JSON answer: values of `*_at` and the other time keys, and any string that looks like one."""
    if isinstance(value, dict):
        return [t for k, v in value.items() for t in times_in(v, k)]
    if isinstance(value, list):
        return [t for v in value for t in times_in(v, key)]
    timed = key.endswith("_at") or key in TIME_KEYS or key in ("scheduled_for", "deadline")
    looks_like_one = isinstance(value, str) and re.match(r"^\d{4}-\d\d-\d\d[T ]", value)
    return [value] if (timed and value is not None) or looks_like_one else []


async def test_every_time_in_json_is_iso_8601_with_its_offset(spawn, app, env, rt, api) -> None:
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["flaky"].enqueue(tag=uuid.uuid4().hex)
    await rt.wait(run_id, timeout=30)
    await rt.enqueue(rt.app.tasks["work"], [{"n": 1}], delay=60)
    answers = {path: (await api.get(path)).json() for path in ("/api/runs", f"/api/runs/{run_id}", "/api/workers")}
    answers |= {path: (await api.get(path)).json() for path in ("/api/throughput", "/api/schedules", "/api/stats")}
    answers["runs --json"] = cli(app, env, "runs")
    answers["runs show --json"] = cli(app, env, "runs", "show", run_id)
    for face, answer in answers.items():
        times = times_in(answer)
        assert face == "/api/stats" or times, face  # /api/stats has no times
        assert all(isinstance(t, str) and ISO.match(t) for t in times), (face, times)
    assert len(times_in(answers[f"/api/runs/{run_id}"])) == 5  # enqueued, started, finished, and each attempt's start


def cli_text(app: Path, env: dict[str, str], *args: str) -> str:
    command = [sys.executable, "-m", "runtime.cli", *args, "--manifest", str(app)]
    done = subprocess.run(command, env=os.environ | env, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


async def test_unique_returns_the_first_run_while_it_is_unfinished_and_within_its_window(spawn, app, env, rt) -> None:
    """The contract's `unique: 10m`: a second enqueue with the same arguments while the first run is not
    finished, and for at most 10m after it was enqueued, returns the first run's id and queues nothing. So a
    second ask once the first run has finished makes a new run, as does one after the window."""
    briefing, short = rt.app.tasks["briefing"], rt.app.tasks["briefing_1s"]
    await operations.pause(rt, "default")
    first = await briefing.enqueue(briefing_id=7)
    assert await briefing.enqueue(briefing_id=7) == first  # unfinished: the same run
    assert await briefing.enqueue(briefing_id=8) != first  # other arguments: another run
    early = await short.enqueue(briefing_id=7)
    assert await short.enqueue(briefing_id=7) == early
    await asyncio.sleep(1.2)
    late = await short.enqueue(briefing_id=7)  # the first is still unfinished, but its 1 s window passed
    assert late != early
    assert (await operations.queue_stats(rt))["default"]["waiting"] == 4  # nothing else was queued

    start_worker(spawn, app, env)
    await operations.resume(rt, "default")
    assert (await rt.wait(first, timeout=20)).status == "succeeded"
    again = await briefing.enqueue(briefing_id=7)  # finished: asking again makes a new run
    assert again != first and (await rt.wait(again, timeout=20)).status == "succeeded"
    assert len(await rt.store.find(function="briefing", limit=10)) == 3  # 7, 8, and 7 again


async def test_a_cancelled_scheduled_run_leaves_the_counts_at_once(rt) -> None:  # type: ignore[no-untyped-def]
    briefing = rt.app.tasks["briefing"]
    later = await briefing.with_options(delay=3600).enqueue(briefing_id=1)
    kept = await briefing.with_options(delay=3600).enqueue(briefing_id=2)
    assert (await operations.queue_stats(rt))["default"]["scheduled"] == 2
    await rt.cancel(later, wait=0)
    assert (await operations.queue_stats(rt))["default"]["scheduled"] == 1  # was 2 until a worker met it
    assert (await rt.store.get(later)).status == "cancelled"
    assert (await rt.store.get(kept)).status == "scheduled"


async def test_a_run_whose_worker_died_on_a_paused_queue_counts_as_waiting_not_running(spawn, app, env, rt) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker(spawn, app, env)
    nap = await rt.app.tasks["nap"].enqueue(seconds=30)
    await wait_until(lambda: len(events(env, "nap")) == 1, 20, "the nap to start")
    await operations.pause(rt, "default")
    assert (await operations.queue_stats(rt))["default"]["running"] == 1
    worker.signal(signal.SIGKILL)
    await asyncio.sleep(2.5)  # the lease (2 s) lapses; on a paused queue nobody reclaims it
    stats = (await operations.queue_stats(rt))["default"]
    assert (stats["running"], stats["waiting"]) == (0, 1), stats  # was running 1 until the queue was resumed
    await rt.cancel(nap, wait=0)
