"""Delivery you can trust, proven by breaking things: each test counts executions from the task's own
side-effect log (not our records) while it kills, pauses or slows the parts.

- a message is acked only after the record of that same attempt is saved (a slow store);
- a task that kills its worker ends `failed` after its retries, dead-lettered, instead of looping;
- a worker killed after a failed attempt but before its ack leaves exactly one next attempt, not two;
- leases are fenced: a paused Redis or a blocked event loop never hands a healthy task to a second worker;
- a stream entry that is not a task message is dead-lettered with the reason and jams nothing;
- read-ahead that waits behind a busy worker goes to an idle one.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import random
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from emulator.embedded_redis import EmbeddedRedis
from runtime import Runtime
from runtime.settings import Settings
from runtime.store.runs import RunStore
from runtime.store.values import FINAL
from runtime.worker.worker import Worker
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, start_workers, started_runtime, wait_until, worker_env

MODULE = f"delivery_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio, json, os, time
from runtime import Context, SkipRetry, task

@task
async def noop(n: int) -> int:
    return n

@task
async def poison(n: int) -> None:
    mark(fn="poison", n=n, phase="start")
    os.kill(os.getpid(), 9)

@task
async def long(n: int, seconds: float) -> None:
    mark(fn="long", n=n, phase="start")
    await asyncio.sleep(seconds)
    mark(fn="long", n=n, phase="end")

@task
async def flaky(n: int, ctx: Context) -> int:
    mark(fn="flaky", n=n, phase="start", attempt=ctx.attempt)
    if ctx.attempt == 1:
        await asyncio.sleep(0.5)
        raise RuntimeError("first attempt fails")
    return n

@task
async def shout(size: int) -> None:
    raise SkipRetry("x" * size)

@task
async def blocker(seconds: float) -> None:
    mark(fn="blocker", phase="start")
    time.sleep(seconds)  # blocks the worker's event loop
    mark(fn="blocker", phase="end")
"""
)

MANIFEST = f"""
app: delivery-test
defaults: {{retries: 3, timeout: 5m, concurrency: 4}}
functions:
  noop: {{handler: "{MODULE}:noop", task: {{}}}}
  poison: {{handler: "{MODULE}:poison", task: {{retries: 2}}}}
  long: {{handler: "{MODULE}:long", task: {{}}}}
  blocker: {{handler: "{MODULE}:blocker", task: {{}}}}
  shout: {{handler: "{MODULE}:shout", task: {{}}}}
  flaky: {{handler: "{MODULE}:flaky", task: {{backoff: {{base: 100ms, max: 100ms}}}}}}
"""

LEASE = 2.0


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, LEASE_SECONDS=str(LEASE))


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env, lease_seconds=LEASE) as runtime:
        yield runtime


def starts_per_task(env: dict[str, str], fn: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for event in events(env, fn):
        if event["phase"] == "start":
            counts[event["n"]] = counts.get(event["n"], 0) + 1
    return counts


async def test_a_message_is_acked_only_after_the_record_of_that_attempt_is_saved(rt: Runtime) -> None:
    # the store takes 0.3 s a batch: tasks finish while a batch is being written, and must wait for the next
    store, broker = rt.store, rt.broker
    write = store.update_many

    async def slow_write(updates: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.3)
        await write(updates)

    store.update_many = slow_write  # type: ignore[method-assign]
    checker = RunStore(rt.settings.database_url)
    worker = Worker(rt)
    violations: list[tuple[str, str]] = []
    acked: list[str] = []
    ack = broker.ack

    async def checked_ack(entry_ids: list[str], retries: Any = None) -> list[str]:
        for key in entry_ids:
            entry_id = key.rpartition("/")[2]
            [(_, fields)] = await broker.redis.xrange(rt.keys.queue("default").stream, entry_id, entry_id)
            run_id = json.loads(fields[b"data"])["task_id"]
            run = await checker.get(run_id)
            if run is None or run.status not in FINAL:
                violations.append((run_id, run.status if run else "missing"))
            acked.append(run_id)
        return await ack(entry_ids, retries)

    broker.ack = checked_ack  # type: ignore[method-assign]
    # tasks of 50 ms are running when a flush starts and finish during it (old code: 300 of 300 violations)
    ids = await rt.app.tasks["long"].enqueue_many([{"n": i, "seconds": 0.05} for i in range(300)])
    running = asyncio.create_task(worker.run())
    try:
        await wait_until(lambda: len(acked) >= 300, 60, "300 acks")
    finally:
        worker.stop()
        await running
        await checker.close()
    assert sorted(acked) == sorted(ids)
    assert violations == []


async def test_a_task_that_kills_its_worker_fails_after_its_retries(spawn, app, env, rt) -> None:
    fine = await rt.app.tasks["noop"].enqueue_many([{"n": i} for i in range(20)])
    poison_id = await rt.app.tasks["poison"].enqueue(n=1)
    workers = [start_worker(spawn, app, env)]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        run = await rt.store.get(poison_id)
        if run is not None and run.status in FINAL:
            break
        if workers[-1].process.poll() is not None:  # what Kubernetes does: start it again
            workers.append(start_worker(spawn, app, env))
        await asyncio.sleep(0.1)
    assert run is not None and run.status == "failed", run
    assert run.attempts == 3
    assert "worker died while running this task" in (run.last_error or "")
    assert [h["attempt"] for h in run.history] == [1, 2, 3]
    assert len(events(env, "poison")) == 3  # it ran three times: retries 2, as declared
    # each attempt names the worker it died with (from its start mark), not the one that found it dead
    assert [h["pid"] for h in run.history] == [e["pid"] for e in events(env, "poison")]
    assert len({h["worker"] for h in run.history}) == 3
    assert await rt.broker.redis.zscore(rt.keys.dead, poison_id) is not None
    for run_id in fine:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    await asyncio.sleep(3 * LEASE)  # nothing comes back for it
    assert len(events(env, "poison")) == 3


async def test_a_worker_killed_before_acking_a_failed_attempt_leaves_one_retry_not_two(
    spawn, app, env, rt, tmp_path
) -> None:
    """The next attempt goes out with the failed one's ack. Sending it first (as before) and dying before the
    ack made two next attempts: the one sent, and the one the entry's next holder sent on reclaiming it."""
    import sqlite3

    run_id = await rt.app.tasks["flaky"].enqueue(n=1)
    worker = start_worker(spawn, app, env)
    await wait_until(lambda: len(events(env, "flaky")) == 1, 15, "the first attempt to start")
    await asyncio.sleep(0.2)  # its `running` record is saved
    lock = sqlite3.connect(env["DATABASE_URL"].removeprefix("sqlite:///"), timeout=5, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # the worker cannot save the failed attempt's record, so cannot ack it
    try:
        await asyncio.sleep(1.5)  # the attempt fails meanwhile (after 0.5 s)
        worker.process.send_signal(signal.SIGKILL)
        worker.process.wait()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=30)
    assert run.status == "succeeded", run
    await asyncio.sleep(2 * LEASE)  # a second next attempt, if any, has run by now
    attempts = [e["attempt"] for e in events(env, "flaky")]
    assert attempts == [1, 2], f"attempts started: {attempts}"


async def test_a_paused_redis_never_hands_a_healthy_task_to_a_second_worker(spawn, app, env, tmp_path) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persistent=False)
    server.start()
    env = env | {"REDIS_URL": server.url}
    settings = Settings(redis_url=server.url, database_url=env["DATABASE_URL"], lease_seconds=LEASE)
    runtime = Runtime.from_manifest(app, settings)
    await runtime.start()
    try:
        start_workers(spawn, app, env, 2)
        ids = await runtime.app.tasks["long"].enqueue_many([{"n": i, "seconds": 10} for i in range(4)])
        await wait_until(lambda: len(starts_per_task(env, "long")) == 4, 15, "4 starts")
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)  # 3 leases long: every idle time looks expired after it
        await asyncio.sleep(3 * LEASE)
        os.kill(server.process.pid, signal.SIGCONT)
        for run_id in ids:
            assert (await runtime.wait(run_id, timeout=40)).status == "succeeded"
        assert starts_per_task(env, "long") == {0: 1, 1: 1, 2: 1, 3: 1}
    finally:
        await runtime.stop()
        server.stop()


async def test_a_blocked_event_loop_keeps_its_leases(spawn, app, env, rt) -> None:
    first = start_worker(spawn, app, env)
    long_id = await rt.app.tasks["long"].enqueue(n=1, seconds=6)
    await wait_until(lambda: starts_per_task(env, "long") == {1: 1}, 10, "the long task to start")
    blocker_id = await rt.app.tasks["blocker"].enqueue(seconds=2.5 * LEASE)
    await wait_until(lambda: len(events(env, "blocker")) == 1, 10, "the blocker to start")
    other = start_worker(spawn, app, env)  # idle, reclaiming whatever looks abandoned
    assert (await rt.wait(long_id, timeout=30)).status == "succeeded"
    assert (await rt.wait(blocker_id, timeout=30)).status == "succeeded"
    await asyncio.sleep(LEASE)
    assert starts_per_task(env, "long") == {1: 1}
    assert [e["phase"] for e in events(env, "blocker")] == ["start", "end"]
    assert "reclaimed" not in other.output and "reclaimed" not in first.output


BAD_ENTRIES: list[dict[bytes, bytes]] = [
    {b"data": b'{"task_id": null, "task_name": "noop", "labels": {}, "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": "a1", "task_name": "noop", "labels": {"attempt": "abc"}, "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": "a2", "task_name": "noop", "labels": {"attempt": 1000000000000000000000000000000}}'},
    {b"data": b'{"task_id": "a3", "task_name": "noop", "labels": {"enqueued_at": "abc"}, "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": "a4", "task_name": "noop", "labels": {"enqueued_at": 1e20}, "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": "a5", "task_name": "noop", "labels": [1, 2], "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": "a6", "task_name": "noop", "labels": "abc", "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": {"a": 1}, "task_name": "noop", "labels": {}, "kwargs": {"n": 1}}'},
    {b"data": b'{"task_id": "a8", "task_name": "noop", "labels": {}, "kwargs": [1]}'},
    {b"data": b"not json at all \xff"},
    {b"data": b"[1, 2, 3]"},
    {b"other": b"an entry without a data field"},
]


async def test_entries_that_are_not_task_messages_are_dead_lettered_and_jam_nothing(spawn, app, env, rt) -> None:
    redis = rt.broker.redis
    for fields in BAD_ENTRIES:
        await redis.xadd(rt.keys.queue("default").stream, fields)  # type: ignore[arg-type]
    good = await rt.app.tasks["noop"].enqueue_many([{"n": i} for i in range(10)])
    worker = start_worker(spawn, app, env)
    for run_id in good:
        assert (await rt.wait(run_id, timeout=20)).status == "succeeded"
    await wait_until(lambda: worker.output.count("dead-lettering entry") == len(BAD_ENTRIES), 10, "dead letters")
    await asyncio.sleep(0.5)
    assert await redis.xlen(rt.keys.queue("default").stream) == 0  # all acked and deleted
    pending = await redis.xpending(rt.keys.queue("default").stream, rt.keys.group)
    assert pending["pending"] == 0
    dead = [m.decode() for m in await redis.zrange(rt.keys.dead, 0, -1)]
    assert len(dead) == len(BAD_ENTRIES)
    made = [run_id for run_id in dead if not run_id.startswith("a")]  # for entries without a usable id
    assert made and all(uuid.UUID(run_id).version == 7 for run_id in made), made
    runs = [await rt.store.get(run_id) for run_id in dead]
    assert all(r is not None and r.status == "failed" for r in runs)
    reasons = sorted((r.last_error or "") for r in runs if r is not None)
    assert all(reason.startswith("invalid task message: ") for reason in reasons)
    assert any("labels.attempt" in reason for reason in reasons)
    assert any("no 'data' field" in reason for reason in reasons)
    kept = next(r for r in runs if r is not None and r.id == "a5")
    assert '"labels": [1, 2]' in kept.arguments["_raw"]  # the raw message is kept, nothing is lost
    assert "reclaimed" not in worker.output


async def test_read_ahead_waiting_behind_a_busy_worker_goes_to_an_idle_one(spawn, app, env, rt) -> None:
    busy = start_worker(spawn, app, env, "--concurrency", "1")  # reads ahead one more than it runs
    await rt.app.tasks["long"].enqueue(n=1, seconds=12)
    await wait_until(lambda: starts_per_task(env, "long") == {1: 1}, 10, "the first long task to start")
    waiting = await rt.app.tasks["long"].enqueue(n=2, seconds=0.1)
    await asyncio.sleep(0.5)  # the busy worker has read it ahead
    queued_at = time.time()
    idle = start_worker(spawn, app, env)
    assert (await rt.wait(waiting, timeout=30)).status == "succeeded"
    [start] = [e for e in events(env, "long") if e["n"] == 2 and e["phase"] == "start"]
    assert start["pid"] != busy.process.pid and start["pid"] == idle.process.pid
    assert start["t"] - queued_at < 6, "it waited for the busy worker instead"


async def test_huge_error_texts_are_capped_in_records_and_logs(spawn, app, env, rt) -> None:
    worker = start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["shout"].enqueue(size=5_000_000), timeout=20)
    assert run.status == "failed"
    assert run.last_error is not None and run.last_error.startswith("SkipRetry: xxx")
    assert len(run.last_error) < 5000 and "more characters" in run.last_error
    await asyncio.sleep(0.3)
    assert max(len(line) for line in worker.lines) < 10_000


def _fuzz_entry(rng: random.Random) -> dict[bytes, bytes]:
    """A stream entry: a valid task message with one or two fields made hostile, or raw junk."""
    junk: list[Any] = [None, True, -1, 0, 2**64, 1e308, -1e308, "", "x" * 300, [], {}, [1, "a"], {"a": {"b": []}}]
    if rng.random() < 0.15:
        return {b"data": bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))}
    if rng.random() < 0.05:
        return {b"other": b"no data field"}
    message: dict[str, Any] = {
        "task_id": uuid.uuid4().hex,
        "task_name": "noop",
        "labels": {"attempt": 1, "enqueued_at": time.time(), "history": []},
        "args": [],
        "kwargs": {"n": 1},
    }
    for _ in range(rng.randrange(1, 3)):
        where = rng.choice(["task_id", "task_name", "labels", "args", "kwargs", "attempt", "enqueued_at", "history"])
        value = copy.deepcopy(rng.choice(junk))
        if where in ("attempt", "enqueued_at", "history"):
            if isinstance(message.get("labels"), dict):
                message["labels"][where] = value
        elif rng.random() < 0.2:
            message.pop(where)
        else:
            message[where] = value
    return {b"data": json.dumps(message).encode()}


async def test_fuzz_the_stream_every_entry_is_settled_and_nothing_jams(spawn, app, env, rt) -> None:
    rng = random.Random(20261123)
    stream = rt.keys.queue("default").stream
    for _ in range(300):
        await rt.broker.redis.xadd(stream, _fuzz_entry(rng))  # type: ignore[arg-type]
    good = await rt.app.tasks["noop"].enqueue_many([{"n": i} for i in range(10)])
    worker = start_worker(spawn, app, env)
    for run_id in good:
        assert (await rt.wait(run_id, timeout=60)).status == "succeeded"
    deadline = time.monotonic() + 60
    while await rt.broker.redis.xlen(stream) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert await rt.broker.redis.xlen(stream) == 0  # every entry acked: run, failed or dead-lettered
    assert (await rt.broker.redis.xpending(stream, rt.keys.group))["pending"] == 0
    assert worker.process.poll() is None
    for trouble in ("could not complete entry", "Task exception was never retrieved", "reclaimed", "cannot save"):
        assert trouble not in worker.output
    dead = [m.decode() for m in await rt.broker.redis.zrange(rt.keys.dead, 0, -1)]
    assert dead and all([await rt.store.get(run_id) is not None for run_id in dead])  # each with its record
