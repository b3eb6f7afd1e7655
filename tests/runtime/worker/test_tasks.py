"""Task semantics on a real Redis with real `runtime worker` subprocesses: retries, backoff, dead
letters, SkipRetry, argument validation, timeouts (async and sync), delays, at-least-once delivery."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runtime import ArgumentsError, Runtime
from runtime.settings import Settings
from runtime.store.models import Run
from runtime.store.values import utcnow
from tests.conftest import write_app
from tests.runtime.workers import events, start_worker, started_runtime, worker_env

MODULE = f"tasks_{uuid.uuid4().hex[:8]}"

SOURCE = """
import asyncio, json, os, time
from runtime import SkipRetry, task

def mark(**event):
    with open(os.environ["TEST_LOG"], "a") as log:
        log.write(json.dumps(event | {"t": time.time(), "pid": os.getpid()}) + "\\n")

@task
async def always_fails(n: int) -> None:
    mark(fn="always_fails")
    raise RuntimeError(f"boom {n}")

@task
async def skip() -> None:
    mark(fn="skip")
    raise SkipRetry("not worth retrying")

@task
async def double(n: int) -> int:
    mark(fn="double", n=n)
    return n * 2

@task
async def slow_async(seconds: float) -> str:
    mark(fn="slow_async", phase="start")
    await asyncio.sleep(seconds)
    mark(fn="slow_async", phase="end")
    return "finished"

@task
def slow_sync(seconds: float) -> str:
    mark(fn="slow_sync", phase="start")
    time.sleep(seconds)
    mark(fn="slow_sync", phase="end")
    return "finished"

@task
async def sleeper(seconds: float) -> str:
    mark(fn="sleeper", phase="start")
    await asyncio.sleep(seconds)
    mark(fn="sleeper", phase="end")
    return "rested"

@task
def sync_double(n: int) -> int:
    return n * 2
"""

MANIFEST = f"""
app: tasks-test
defaults: {{retries: 3, timeout: 5m, concurrency: 5}}
functions:
  always_fails: {{handler: "{MODULE}:always_fails", task: {{}}}}
  skip: {{handler: "{MODULE}:skip", task: {{}}}}
  double: {{handler: "{MODULE}:double", task: {{}}}}
  slow_async: {{handler: "{MODULE}:slow_async", task: {{timeout: 1s, retries: 1}}}}
  slow_sync: {{handler: "{MODULE}:slow_sync", task: {{timeout: 1s, retries: 1}}}}
  sync_double: {{handler: "{MODULE}:sync_double", task: {{}}}}
  sleeper: {{handler: "{MODULE}:sleeper", task: {{timeout: 20s, retries: 0}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(app: Path, redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path)


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime


async def test_failing_task_runs_four_times_with_growing_gaps_then_is_a_dead_letter(spawn, app, env, rt):
    worker = start_worker(spawn, app, env)
    run_id = await rt.app.tasks["always_fails"].enqueue(n=7)
    run = await rt.wait(run_id, timeout=30)

    assert run.status == "failed"
    assert run.attempts == 4
    assert run.last_error == "RuntimeError: boom 7"
    assert [h["attempt"] for h in run.history] == [1, 2, 3, 4]
    assert all(h["error"] == "RuntimeError: boom 7" for h in run.history)
    starts = [e["t"] for e in events(env, "always_fails")]
    assert len(starts) == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95 and gaps[2] >= 1.95, gaps  # 1 s, 2 s, 4 s, jittered to 50-100 %
    assert gaps[0] <= gaps[1] <= gaps[2], gaps
    dead = [i.decode() for i in await rt.broker.redis.zrange(rt.keys.dead, 0, -1)]
    assert dead == [run_id]
    worker.wait_for("failed always_fails")
    assert "retry always_fails" in worker.output and "attempt 1/4" in worker.output


async def test_skip_retry_fails_after_one_run(spawn, app, env, rt):
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["skip"].enqueue(), timeout=15)
    assert (run.status, run.attempts, run.last_error) == ("failed", 1, "SkipRetry: not worth retrying")
    assert len(events(env, "skip")) == 1


async def test_bad_arguments_are_refused_at_enqueue(rt):
    with pytest.raises(ArgumentsError, match=r"bad arguments for 'double': n: Input should be a valid integer"):
        await rt.app.tasks["double"].enqueue(n="seven")
    with pytest.raises(ArgumentsError, match="unexpected argument"):
        await rt.app.tasks["double"].enqueue(n=1, extra=2)


async def test_a_run_whose_arguments_do_not_validate_fails_at_once_without_retries(spawn, app, env, rt):
    # a message that skipped validation (an older producer, a hand-written message) reaches the worker
    run_id = uuid.uuid4().hex
    await rt.store.insert_many(
        [Run(id=run_id, function="double", arguments={"n": "x"}, status="queued", max_attempts=4, enqueued_at=utcnow())]
    )
    await rt.broker.kick_many([rt.message("double", run_id, {"n": "x"})])
    start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=15)
    assert run.status == "failed" and run.attempts == 1
    assert "bad arguments for 'double'" in (run.last_error or "")
    assert events(env, "double") == []


async def test_arguments_are_coerced_by_type_hints_and_the_result_recorded(spawn, app, env, rt):
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["double"].enqueue(n="21"), timeout=15)
    assert (run.status, run.result, run.arguments) == ("succeeded", 42, {"n": 21})
    assert run.started_at is not None and run.finished_at is not None and run.finished_at >= run.started_at


@pytest.mark.parametrize("function", ["slow_async", "slow_sync"])
async def test_timeout_stops_the_attempt_and_is_retried(spawn, app, env, rt, function):
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks[function].enqueue(seconds=3), timeout=30)
    assert run.status == "failed" and run.attempts == 2
    assert run.last_error == "timed out after 1s"
    await asyncio.sleep(3.5)  # long enough for a not-really-stopped attempt to reach its end
    marks = events(env, function)
    assert [m["phase"] for m in marks] == ["start", "start"], marks  # no attempt ran to its end
    # the retry started only after the timed-out attempt was stopped: never beside it
    assert marks[1]["t"] - marks[0]["t"] >= 1.0


async def test_sync_functions_run_in_a_child_process_and_return_results(spawn, app, env, rt):
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["sync_double"].enqueue(n=4), timeout=20)
    assert (run.status, run.result) == ("succeeded", 8)


async def test_a_task_enqueued_before_any_worker_exists_runs_once_a_worker_starts(spawn, app, env, rt, redis_server):
    redis_server.client().flushall()  # not even the consumer group exists
    run_id = await rt.app.tasks["double"].enqueue(n=5)
    await asyncio.sleep(0.5)
    assert (await rt.store.get(run_id)).status == "queued"
    start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=15)
    assert (run.status, run.result) == ("succeeded", 10)
    assert len(events(env, "double")) == 1


async def test_delay_runs_the_task_no_sooner_and_about_then(spawn, app, env, rt):
    start_worker(spawn, app, env)
    enqueued = time.time()
    run_id = await rt.app.tasks["double"].with_options(delay=2).enqueue(n=1)
    assert (await rt.store.get(run_id)).status == "scheduled"
    run = await rt.wait(run_id, timeout=15)
    started = events(env, "double")[0]["t"]
    assert 2.0 <= started - enqueued < 3.0
    assert run.status == "succeeded"


async def test_sigterm_lets_the_running_task_finish(spawn, app, env, rt):
    worker = start_worker(spawn, app, env)
    run_id = await rt.app.tasks["slow_async"].enqueue(seconds=0.8)
    deadline = time.time() + 10
    while not events(env, "slow_async") and time.time() < deadline:
        await asyncio.sleep(0.02)
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    run = await rt.store.get(run_id)
    assert run is not None and (run.status, run.result, run.attempts) == ("succeeded", "finished", 1)
    assert "waiting up to 10s for 1 running task" in worker.output


async def test_a_killed_workers_task_runs_again_on_another_worker(spawn, app, env, rt):
    first = start_worker(spawn, app, env)
    run_id = await rt.app.tasks["slow_async"].enqueue(seconds=0.9)
    deadline = time.time() + 10
    while not events(env, "slow_async") and time.time() < deadline:
        await asyncio.sleep(0.02)
    first.signal(signal.SIGKILL)
    first.wait(5)
    second = start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=20)  # the lease is 2 s in this test
    assert (run.status, run.result) == ("succeeded", "finished")
    assert [e["phase"] for e in events(env, "slow_async")] == ["start", "start", "end"]
    assert "reclaimed entry" in second.output, second.output[-3000:]


async def test_a_healthy_long_task_is_never_handed_to_a_second_worker(spawn, app, env, rt):
    # 3.5 s of work with a 2 s lease: the lease is renewed, so the other worker never takes it
    first = start_worker(spawn, app, env)
    run_id = await rt.app.tasks["sleeper"].enqueue(seconds=3.5)
    deadline = time.time() + 10
    while not events(env, "sleeper") and time.time() < deadline:
        await asyncio.sleep(0.02)
    other = start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=15)
    assert (run.status, run.result) == ("succeeded", "rested")
    await asyncio.sleep(1)
    marks = events(env, "sleeper")
    assert [e["phase"] for e in marks] == ["start", "end"]
    assert len({e["pid"] for e in marks}) == 1
    assert "reclaimed" not in other.output and "reclaimed" not in first.output


async def test_the_stream_holds_only_unfinished_tasks(spawn, app, env, rt):
    ids = await rt.app.tasks["double"].enqueue_many([{"n": i} for i in range(300)])
    assert await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 300
    start_worker(spawn, app, env)
    for run_id in ids[-5:]:
        await rt.wait(run_id, timeout=30)
    deadline = time.time() + 10
    while await rt.broker.redis.xlen(rt.keys.queue("default").stream) and time.time() < deadline:
        await asyncio.sleep(0.05)
    assert await rt.broker.redis.xlen(rt.keys.queue("default").stream) == 0
    runs = await rt.store.list(function="double", limit=1000)
    assert len(runs) == 300 and {r.status for r in runs} == {"succeeded"}


async def test_bulk_enqueue_returns_ids_in_order_and_records_every_run(rt):
    ids = await rt.app.tasks["double"].enqueue_many([{"n": i} for i in range(50)])
    assert len(set(ids)) == 50
    runs = {r.id: r for r in await rt.store.list(limit=100)}
    assert [runs[i].arguments["n"] for i in ids] == list(range(50))


def test_a_dead_redis_is_one_clear_line_at_start(spawn, app, env):
    from tests.conftest import free_port

    worker = spawn(
        ["runtime", "worker", "--manifest", str(app)],
        app.parent,
        env | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "STARTUP_TIMEOUT": "0"},
    )
    assert worker.wait(20) == 1
    assert worker.output.startswith("error: cannot reach Redis at REDIS_URL=redis://127.0.0.1:")
    assert "Traceback" not in worker.output


def test_a_malformed_redis_url_names_the_setting_and_the_expected_form(spawn, app, env):
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env | {"REDIS_URL": "localhost:6379"})
    assert worker.wait(20) == 1
    assert worker.output == (
        "error: REDIS_URL='localhost:6379' is not a Redis URL; expected redis://host:port/db "
        "(e.g. redis://localhost:6379/0)"
    )


def test_an_unreachable_database_is_one_clear_line_at_start(spawn, app, env):
    worker = spawn(
        ["runtime", "worker", "--manifest", str(app)],
        app.parent,
        env | {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", "STARTUP_TIMEOUT": "0"},
    )
    assert worker.wait(20) == 1
    assert worker.output.startswith("error: cannot use the database at DATABASE_URL=postgresql")
    assert "Traceback" not in worker.output
    assert len(worker.output.splitlines()) == 1


def test_worker_health_probe(spawn, app, env):
    import httpx

    from tests.conftest import free_port

    port = free_port()
    start_worker(spawn, app, env, WORKER_HEALTH_PORT=str(port))
    ready = httpx.get(f"http://127.0.0.1:{port}/health")
    assert ready.status_code == 200 and ready.json()["redis"] == "ok" and ready.json()["database"] == "ok"
    assert httpx.get(f"http://127.0.0.1:{port}/health/live").status_code == 200


async def test_json_logs_carry_run_id_function_attempt_and_duration(spawn, app, env, rt):
    worker = start_worker(spawn, app, env, ENV="production")
    run_id = await rt.app.tasks["double"].enqueue(n=2)
    await rt.wait(run_id, timeout=15)
    worker.wait_for('"message": "done double')
    lines = [json.loads(line) for line in worker.lines if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    start = next(line for line in lines if line["message"].startswith("start double"))
    done = next(line for line in lines if line["message"].startswith("done double"))
    assert (start["run_id"], start["function"], start["attempt"], start["max_attempts"]) == (run_id, "double", 1, 4)
    assert done["outcome"] == "succeeded" and done["duration_ms"] >= 0


async def test_a_worker_rides_out_a_redis_outage(spawn, app, env, tmp_path):
    import httpx

    from emulator.embedded_redis import EmbeddedRedis
    from tests.conftest import free_port

    server = EmbeddedRedis(tmp_path / "redis", persistent=True)
    server.start()
    port = free_port()
    worker = start_worker(spawn, app, env | {"REDIS_URL": server.url, "WORKER_HEALTH_PORT": str(port)})
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
        assert (await probe.get("/health")).status_code == 200

        server.stop()  # Redis goes away under a running worker
        worker.wait_for("cannot read tasks from Redis")
        down = await probe.get("/health")
        assert down.status_code == 503 and down.json()["redis"].startswith("down:")
        assert (await probe.get("/health/live")).status_code == 200  # alive: no restart wanted

        server.start(port=server.port)  # back, with its data (AOF)
        runtime = Runtime.from_manifest(app, Settings(redis_url=server.url, database_url=env["DATABASE_URL"]))
        await runtime.start()
        try:
            run = await runtime.wait(await runtime.app.tasks["double"].enqueue(n=8), timeout=20)
            assert (run.status, run.result) == ("succeeded", 16)
            assert worker.process.poll() is None
            healthy = await probe.get("/health")
            assert healthy.status_code == 200, healthy.text  # which dependency it found down, if any
        finally:
            await runtime.stop()
            server.stop()


async def test_a_worker_recreates_its_consumer_groups_when_redis_lost_its_data(spawn, app, env, rt):
    """A Redis that comes back empty (no persistence, a failover to a replica that had not got the group)
    answers XREADGROUP with NOGROUP: the worker creates the groups again instead of failing forever."""
    worker = start_worker(spawn, app, env)
    run_id = await rt.app.tasks["double"].enqueue(n=1)
    assert (await rt.wait(run_id, timeout=20)).status == "succeeded"
    await rt.broker.redis.flushall()  # the data is gone, the worker is not told
    run_id = await rt.app.tasks["double"].enqueue(n=21)
    run = await rt.wait(run_id, timeout=20)
    assert (run.status, run.result) == ("succeeded", 42)
    assert worker.process.poll() is None


async def test_a_stopped_worker_leaves_the_workers_list_at_once(spawn, app, env, rt):
    from runtime.ops import presence

    worker = start_worker(spawn, app, env)
    deadline = time.monotonic() + 10
    while not await presence.workers(rt):
        assert time.monotonic() < deadline, "the worker never showed up in the workers list"
        await asyncio.sleep(0.1)
    worker.process.send_signal(signal.SIGTERM)
    worker.process.wait(timeout=20)
    assert await presence.workers(rt) == []  # not 30 s later, when its heartbeat goes stale
