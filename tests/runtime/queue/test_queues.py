"""The seed's Asynq feature set on a real Redis with real workers: weighted and strict priority queues,
`--queues`, retries in their own queue, unique tasks under concurrent enqueues from two processes, `at=`,
deadlines (async and sync), cancellation (scheduled, queued, running async and sync, on another worker),
pausing, and the `Context` parameter. Executions are counted from the tasks' own side-effect log."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime import ArgumentsError, Runtime
from runtime.settings import Settings
from tests.conftest import ROOT, write_app
from tests.runtime import workers
from tests.runtime.workers import MARK, events, wait_until, worker_env

MODULE = f"queues_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio, json, os, time
from runtime import Context, task

@task
async def work(n: int, lane: str = "") -> None:
    mark(fn="work", queue=lane, n=n)

@task
async def nap(n: int, seconds: float) -> None:
    mark(fn="nap", n=n, phase="start")
    try:
        await asyncio.sleep(seconds)
        mark(fn="nap", n=n, phase="end")
    finally:
        mark(fn="nap", n=n, phase="finally")

@task
def sync_nap(n: int, seconds: float) -> None:
    for _ in range(int(seconds * 10)):
        mark(fn="sync_nap", n=n, phase="tick")
        time.sleep(0.1)

@task
async def flaky_low(n: int) -> None:
    flag = os.environ["TEST_LOG"] + f".flaky{n}"
    mark(fn="flaky_low", n=n)
    if not os.path.exists(flag):
        open(flag, "w").close()
        raise RuntimeError("first attempt fails")

@task
async def once(n: int) -> None:
    mark(fn="once", n=n)
    await asyncio.sleep(0.5)

@task
async def aware(n: int, ctx: Context) -> None:
    mark(fn="aware", n=n, run_id=ctx.run_id, attempt=ctx.attempt)
    while not ctx.cancelled.is_set():
        await asyncio.sleep(0.05)
"""
)

MANIFEST = f"""
app: queues-test
defaults: {{retries: 2, concurrency: 1, backoff: {{base: 100ms, max: 200ms}}}}
queues: {{critical: 6, default: 3, low: 1}}
priority: {{priority}}
functions:
  work: {{handler: "{MODULE}:work", task: {{}}}}
  nap: {{handler: "{MODULE}:nap", task: {{}}}}
  sync_nap: {{handler: "{MODULE}:sync_nap", task: {{}}}}
  flaky_low: {{handler: "{MODULE}:flaky_low", task: {{queue: low}}}}
  once: {{handler: "{MODULE}:once", task: {{unique: 10m}}}}
  aware: {{handler: "{MODULE}:aware", task: {{}}}}
"""


def make_app(directory: Path, priority: str) -> Path:
    return write_app(directory, MANIFEST.replace("{priority}", priority), {f"{MODULE}.py": SOURCE})


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_app(tmp_path_factory.mktemp("weighted"), "weighted")


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, SHUTDOWN_TIMEOUT="5", LOG_LEVEL="warning")


async def runtime_for(app: Path, env: dict[str, str]) -> Runtime:
    os.environ["TEST_LOG"] = env["TEST_LOG"]
    runtime = Runtime.from_manifest(app, Settings(redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"]))
    await runtime.start()
    return runtime


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    runtime = await runtime_for(app, env)
    yield runtime
    await runtime.stop()


def start_worker(spawn: Any, app: Path, env: dict[str, str], *args: str) -> Any:
    return workers.start_worker(spawn, app, env, *args, LOG_LEVEL="info")


async def backlog(rt: Runtime, per_queue: int) -> None:
    for queue in ("critical", "default", "low"):
        await (
            rt.app.tasks["work"]
            .with_options(queue=queue)
            .enqueue_many([{"lane": queue, "n": n} for n in range(per_queue)])
        )


async def test_weighted_queues_are_served_in_proportion_to_their_weights(spawn, app, env, rt) -> None:
    await backlog(rt, 200)
    start_worker(spawn, app, env)
    await wait_until(lambda: len(events(env, "work")) >= 300, 60, "300 starts")
    first = Counter(e["queue"] for e in events(env, "work")[:300])
    print(f"weighted starts of 300: {dict(first)}")
    # expected 180 : 90 : 30 of 300; each count within 4 standard deviations of a binomial draw
    for queue, share in (("critical", 0.6), ("default", 0.3), ("low", 0.1)):
        expected, sigma = 300 * share, (300 * share * (1 - share)) ** 0.5
        assert abs(first[queue] - expected) <= 4 * sigma, (queue, first)


async def test_strict_priority_never_starts_a_lighter_queue_while_a_heavier_one_has_work(spawn, env, tmp_path) -> None:
    app = make_app(tmp_path / "strict", "strict")
    runtime = await runtime_for(app, env)
    try:
        await backlog(runtime, 30)
        start_worker(spawn, app, env)
        await wait_until(lambda: len(events(env, "work")) >= 90, 60, "90 starts")
    finally:
        await runtime.stop()
    order = [e["queue"] for e in events(env, "work")]
    assert order == ["critical"] * 30 + ["default"] * 30 + ["low"] * 30


async def test_a_worker_serves_only_the_queues_it_is_given_and_retries_stay_in_their_queue(spawn, app, env, rt) -> None:
    other = await rt.app.tasks["work"].with_options(queue="critical").enqueue(n=1)
    flaky = await rt.app.tasks["flaky_low"].enqueue(n=1)  # declared on `low`
    start_worker(spawn, app, env, "--queues", "low")
    run = await rt.wait(flaky, timeout=20)
    assert (run.status, run.attempts, run.queue) == ("succeeded", 2, "low")  # the retry came back to `low`
    await asyncio.sleep(0.5)
    assert events(env, "work") == [] and (await rt.store.get(other)).status == "queued"  # type: ignore[union-attr]


def test_an_undeclared_queue_is_one_clear_line(spawn, app, env) -> None:
    worker = spawn(["runtime", "worker", "--manifest", str(app), "--queues", "nope"], app.parent, env)
    assert worker.wait(20) == 1
    assert "nope, not declared in the manifest" in worker.output and "Traceback" not in worker.output


async def test_enqueue_to_an_undeclared_queue_is_an_error(rt) -> None:
    with pytest.raises(ArgumentsError, match="queue: 'nope' is not declared"):
        await rt.app.tasks["work"].with_options(queue="nope").enqueue(n=1)


UNIQUE_SCRIPT = """
import asyncio, os, sys
from runtime import Runtime
from runtime.settings import Settings

async def main():
    rt = Runtime.from_manifest(sys.argv[1], Settings(redis_url=os.environ["REDIS_URL"],
                               database_url=os.environ["DATABASE_URL"]))
    await rt.start()
    ids = await asyncio.gather(*(rt.app.tasks["once"].enqueue(n=7) for _ in range(25)))
    print(" ".join(ids))
    await rt.stop()

asyncio.run(main())
"""


async def test_unique_tasks_make_one_run_from_50_concurrent_enqueues_in_two_processes(
    spawn, app, env, rt, tmp_path
) -> None:
    script = tmp_path / "enqueue_once.py"
    script.write_text(UNIQUE_SCRIPT)
    child_env = os.environ | env | {"PYTHONPATH": str(ROOT)}
    callers = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(script), str(app), env=child_env, stdout=asyncio.subprocess.PIPE
        )
        for _ in range(2)
    ]
    ids = set()
    for caller in callers:
        out, _ = await asyncio.wait_for(caller.communicate(), 60)
        assert caller.returncode == 0
        ids |= set(out.decode().split())
    assert len(ids) == 1  # every caller got the first run's id
    [run_id] = ids
    assert await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 1  # and one message was queued
    start_worker(spawn, app, env)
    assert (await rt.wait(run_id, timeout=20)).status == "succeeded"
    assert len(events(env, "once")) == 1
    again = await rt.app.tasks["once"].enqueue(n=7)  # finished: the key is free again
    assert again != run_id
    keyed = await rt.app.tasks["work"].with_options(key="report:42").enqueue(n=1)
    assert await rt.app.tasks["work"].with_options(key="report:42").enqueue(n=2) == keyed


async def test_at_runs_no_sooner_than_then(spawn, app, env, rt) -> None:
    start_worker(spawn, app, env)
    at = datetime.now(UTC).replace(tzinfo=None) + timedelta(seconds=1.5)  # naive means UTC
    run_id = await rt.app.tasks["work"].with_options(queue="default", at=at).enqueue(n=1)
    assert (await rt.store.get(run_id)).status == "scheduled"  # type: ignore[union-attr]
    await rt.wait(run_id, timeout=20)
    [event] = events(env, "work")
    assert event["t"] >= at.replace(tzinfo=UTC).timestamp()
    with pytest.raises(ArgumentsError, match="at: must be a datetime"):
        await rt.app.tasks["work"].with_options(queue="default", at="tomorrow").enqueue(n=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("function", ["nap", "sync_nap"])
async def test_a_deadline_stops_the_attempt_and_fails_the_run_without_retry(spawn, app, env, rt, function) -> None:
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks[function].with_options(deadline=1.5).enqueue(n=1, seconds=10), timeout=20)
    assert run.status == "failed" and run.attempts == 1
    assert "stopped at its deadline" in (run.last_error or "")
    await asyncio.sleep(1)
    assert [e.get("phase") for e in events(env, "nap")].count("end") == 0


async def test_a_run_whose_deadline_passed_before_it_started_fails_without_running(spawn, app, env, rt) -> None:
    run_id = await rt.app.tasks["nap"].with_options(deadline=0.3).enqueue(n=1, seconds=0.1)
    await asyncio.sleep(0.6)
    start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=20)
    assert run.status == "failed" and "passed before it started" in (run.last_error or "")
    assert events(env, "nap") == []


async def test_cancel_a_scheduled_and_a_queued_run_they_never_start(spawn, app, env, rt) -> None:
    scheduled = await rt.app.tasks["work"].with_options(delay=1).enqueue(n=1)
    queued = await rt.app.tasks["work"].enqueue(n=2)
    for run_id in (scheduled, queued):
        assert (await rt.cancel(run_id)).status == "cancelled"
    start_worker(spawn, app, env)
    await asyncio.sleep(2.5)
    assert events(env, "work") == []
    assert {(await rt.store.get(r)).status for r in (scheduled, queued)} == {"cancelled"}  # type: ignore[union-attr]
    assert await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 0  # acked, not left behind
    with pytest.raises(ValueError, match="already cancelled"):
        await rt.cancel(queued)


@pytest.mark.parametrize("function", ["nap", "sync_nap"])
async def test_cancel_a_running_run_on_another_worker(spawn, app, env, rt, function) -> None:
    start_worker(spawn, app, env)  # the run is on this worker; the cancel comes from this test's process
    run_id = await rt.app.tasks[function].enqueue(n=1, seconds=20)
    await wait_until(lambda: len(events(env, function)) > 0, 20, "the task to start")
    asked = time.monotonic()
    run = await rt.cancel(run_id)
    latency = time.monotonic() - asked
    print(f"cancel of a running {function} run: {latency * 1000:.0f} ms to `cancelled`")
    assert run.status == "cancelled" and latency < 1.0, (run.status, latency)
    stopped = time.time()
    await asyncio.sleep(1)
    later = [e for e in events(env, function) if e["t"] > stopped + 0.3]
    assert later == []  # it stopped: a sync task's process was killed
    if function == "nap":
        assert [e["phase"] for e in events(env, "nap")] == ["start", "finally"]  # it could clean up
    await asyncio.sleep(0.5)
    final = await rt.store.get(run_id)
    assert final is not None and (final.status, final.attempts) == ("cancelled", 1)
    assert await rt.broker.redis.zscore(rt.keys.dead, run_id) is None  # not a dead letter


async def test_a_paused_queue_accepts_enqueues_and_runs_them_after_resume(spawn, app, env, rt) -> None:
    paused = rt.keys.queue("default").paused
    await rt.broker.redis.set(paused, "1")
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["work"].enqueue(n=1)
    await asyncio.sleep(2)
    assert events(env, "work") == [] and (await rt.store.get(run_id)).status == "queued"  # type: ignore[union-attr]
    await rt.broker.redis.delete(paused)
    assert (await rt.wait(run_id, timeout=10)).status == "succeeded"


async def test_nothing_starts_from_a_queue_once_its_pause_returned(spawn, app, env, rt) -> None:
    """Pausing is atomic: once `pause` returned, no task of that queue starts, not even one a worker was
    already waiting for (a worker blocked on the queue's stream used to run it: it re-read the flag each 1 s)."""
    from runtime.ops import operations

    start_worker(spawn, app, env)
    warm = await rt.app.tasks["work"].enqueue(n=0)
    assert (await rt.wait(warm, timeout=20)).status == "succeeded"  # the worker is idle, waiting on the stream
    for round_ in range(1, 4):  # each round: a worker blocked on the stream the moment the queue is paused
        await asyncio.sleep(0.3)
        await operations.pause(rt, "default")
        ids = await rt.app.tasks["work"].enqueue_many([{"n": round_ * 100 + i} for i in range(20)])
        await asyncio.sleep(1.5)
        started = [e for e in events(env, "work") if e["n"] >= round_ * 100 and e["n"] < round_ * 100 + 100]
        assert started == [], f"round {round_}: {len(started)} task(s) started from a paused queue"
        await operations.resume(rt, "default")
        for run_id in ids:
            assert (await rt.wait(run_id, timeout=20)).status == "succeeded"


async def test_a_task_may_take_its_context(spawn, app, env, rt) -> None:
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["aware"].enqueue(n=1)  # Context is not an argument
    await wait_until(lambda: len(events(env, "aware")) == 1, 20, "the task to start")
    [event] = events(env, "aware")
    assert (event["run_id"], event["attempt"]) == (run_id, 1)
    assert (await rt.cancel(run_id)).status == "cancelled"


async def test_dead_letters_are_counted_on_their_own_queue(spawn, app, env, rt) -> None:
    from runtime.ops import operations

    start_worker(spawn, app, env)
    nap = rt.app.tasks["nap"]
    ids = [await nap.with_options(deadline=0.3).enqueue(n=1, seconds=5)]  # stopped at its deadline: failed, no retry
    ids += [await nap.with_options(deadline=0.3, queue="low").enqueue(n=i, seconds=5) for i in (2, 3)]
    for run_id in ids:
        assert (await rt.wait(run_id, timeout=20)).status == "failed"
    await asyncio.sleep(0.2)  # the dead letters are written right after the records
    stats = await operations.queue_stats(rt)
    assert {name: row["dead"] for name, row in stats.items()} == {"critical": 0, "default": 1, "low": 2}
    await operations.replay(rt, [ids[1]])  # a replayed run leaves the list of its queue
    stats = await operations.queue_stats(rt)
    assert (stats["default"]["dead"], stats["low"]["dead"]) == (1, 1)
