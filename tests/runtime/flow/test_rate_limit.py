"""Rate limits on real workers: at most `limit` runs per `period` per key value, across every process; the excess
is never run, its records end `skipped` with the reason, the enqueue still returns every id, `runtime runs
--status skipped` and /metrics show them, and without Redis the enqueue fails clearly, leaving nothing. Counted
from the task's side-effect log; the window slides (no double burst at a fixed window's edge)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from runtime import Runtime
from runtime.errors import EnqueueUnavailable
from runtime.flow.rate_limit import RateLimiter
from runtime.flow.state import limits_now
from runtime.ops.metrics import render  # imported before any enqueue: it counts this process's skipped runs
from runtime.queue.keys import Keys
from tests.conftest import RedisServer, command, write_app
from tests.runtime.workers import MARK, events, start_worker, started_runtime, wait_until, worker_env

MODULE = f"rated_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
from runtime import task

@task
async def notify(customer_id: str, n: int) -> None:
    mark(fn="notify", customer=customer_id, n=n)

@task
async def report(n: int) -> None:
    mark(fn="report", n=n)
"""
)

MANIFEST = f"""
app: rate-test
functions:
  notify:
    handler: "{MODULE}:notify"
    task: {{rate_limit: {{limit: 3, period: 2s, key: customer_id}}}}
  report:
    handler: "{MODULE}:report"
    task: {{rate_limit: {{limit: 5, period: 1h}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("rate"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path, database_url: str) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, DATABASE_URL=database_url)


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime


async def spawned(app: Path, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    """A real process (the CLI, or a script enqueuing) on the test's Redis and database, its output piped."""
    return await asyncio.create_subprocess_exec(
        *args,
        cwd=app.parent,
        env={"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(app.parent)} | env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def statuses(rt: Runtime, ids: list[str]) -> list[str]:
    runs = [await rt.store.get(run_id) for run_id in ids]
    return [run.status if run is not None else "missing" for run in runs]


async def test_runs_over_the_limit_per_key_are_skipped_with_the_reason_and_run_again_after_the_period(
    spawn: Any, app: Path, env: dict[str, str], rt: Runtime
) -> None:
    start_worker(spawn, app, env)
    notify = rt.app.tasks["notify"]
    a = [await notify.enqueue(customer_id="A", n=n) for n in range(10)]
    b = [await notify.enqueue(customer_id="B", n=n) for n in range(2)]
    assert len(set(a + b)) == 12  # every enqueue returned its own id, skipped or not

    await wait_until(lambda: len(events(env, "notify")) >= 5, 20, "3 runs of A and 2 of B")
    await asyncio.sleep(1.0)  # time for any run that should not happen
    ran = events(env, "notify")
    assert Counter(event["customer"] for event in ran) == {"A": 3, "B": 2}
    assert sorted(event["n"] for event in ran if event["customer"] == "A") == [0, 1, 2]  # the first three

    skipped = [await rt.store.get(run_id) for run_id in a[3:]]
    assert [run.status if run else None for run in skipped] == ["skipped"] * 7
    for run in skipped:
        assert run is not None and run.finished_at is not None and run.attempts == 0
        assert run.last_error == "rate limit: 3 per 2s for customer_id=A"
    assert set(await statuses(rt, a[:3] + b)) == {"succeeded"}
    [row] = [r for r in await limits_now(rt) if r["function"] == "notify"]  # `runtime limits`: skipped per key
    assert (row["limit"], row["key"], row["skipped"]) == ("rate_limit", "A", 7), row

    await asyncio.sleep(2.2)  # the period has passed since A's first runs
    again = await notify.enqueue(customer_id="A", n=10)
    await wait_until(lambda: any(e["n"] == 10 for e in events(env, "notify")), 20, "A to run again")
    assert (await rt.wait(again, timeout=10)).status == "succeeded"


ENQUEUER = """
import asyncio, json, sys, time
from runtime import Runtime

async def main(manifest, start):
    async with Runtime.from_manifest(manifest) as rt:
        await asyncio.sleep(max(0.0, start - time.time()))  # both processes enqueue at the same moment
        report = rt.app.tasks["report"]
        ids = await asyncio.gather(*(report.enqueue(n=n) for n in range(20)))
        print(json.dumps(ids))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


async def test_the_limit_holds_across_processes_enqueuing_at_once(
    spawn: Any, app: Path, env: dict[str, str], rt: Runtime, tmp_path: Path
) -> None:
    start_worker(spawn, app, env)
    script = tmp_path / "enqueue.py"
    script.write_text(ENQUEUER)
    start = time.time() + 4
    children = [await spawned(app, env, sys.executable, str(script), str(app), str(start)) for _ in range(2)]
    outputs = [await child.communicate() for child in children]
    assert [child.returncode for child in children] == [0, 0]
    ids = [run_id for output, _ in outputs for run_id in json.loads(output.decode().strip().splitlines()[-1])]
    assert len(set(ids)) == 40

    await wait_until(lambda: len(events(env, "report")) >= 5, 20, "5 runs of report")
    await asyncio.sleep(1.0)
    assert len(events(env, "report")) == 5  # not 5 per process
    assert Counter(await statuses(rt, ids)) == {"succeeded": 5, "skipped": 35}


async def test_skipped_runs_are_listed_by_the_cli_and_counted_in_metrics(
    spawn: Any, app: Path, env: dict[str, str], rt: Runtime
) -> None:
    def skipped_in_metrics(text: str) -> float:
        prefix = 'firstsip_runs_finished_total{function="report",outcome="skipped",queue="default"} '
        return sum(float(line.removeprefix(prefix)) for line in text.splitlines() if line.startswith(prefix))

    before = skipped_in_metrics((await render(rt))[0].decode())
    ids = await rt.app.tasks["report"].enqueue_many([{"n": n} for n in range(8)])
    assert skipped_in_metrics((await render(rt))[0].decode()) - before == 3

    runs = (command("runtime"), "runs", "--manifest", str(app), "--status", "skipped")
    listing = await spawned(app, env, *runs, "--json")
    out, err = await listing.communicate()
    assert listing.returncode == 0, err.decode()
    shown = json.loads(out)
    assert sorted(run["id"] for run in shown) == sorted(ids[5:])
    assert {run["status"] for run in shown} == {"skipped"}
    assert {run["last_error"] for run in shown} == {"rate limit: 5 per 1h for function report"}
    table = await spawned(app, env, *runs)
    out, err = await table.communicate()
    assert table.returncode == 0, err.decode()
    assert out.decode().count("skipped") >= 3 and ids[5] in out.decode()


async def test_without_redis_the_enqueue_fails_clearly_and_leaves_nothing(
    app: Path, tmp_path: Path, database_url: str
) -> None:
    server = RedisServer(tmp_path / "redis")
    env = worker_env(server.url, tmp_path, DATABASE_URL=database_url)
    try:
        async with started_runtime(app, env) as rt:
            server.stop()
            with pytest.raises(EnqueueUnavailable, match="rate limit needs Redis"):
                await rt.app.tasks["notify"].enqueue(customer_id="A", n=1)
            assert await rt.store.list() == []
    finally:
        server.stop()


async def test_the_window_slides_so_no_double_burst_gets_through_at_a_window_edge(redis_url: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_url)
    limiter = RateLimiter(client)
    log = Keys("rate-test").rate("notify", "A")
    try:
        # one enqueue is decided at once: the first two of three get through
        assert await limiter.admit("notify", [log] * 3, ["r1", "r2", "r3"], 2, 1.0) == [True, True, False]
        assert await client.zcard(log) == 2  # the log never holds more than the limit
        assert await limiter.admit("notify", [log], ["r1"], 2, 1.0) == [True]  # the same run again: let through
        await asyncio.sleep(1.05)
        # just before a second turns, two more; just after it, a fixed window would let two more through
        await asyncio.sleep((0.85 - time.time() % 1) % 1)
        assert await limiter.admit("notify", [log, log], ["r4", "r5"], 2, 1.0) == [True, True]
        await asyncio.sleep(0.3)
        assert await limiter.admit("notify", [log], ["r6"], 2, 1.0) == [False]
        await asyncio.sleep(0.8)  # a period after r4 and r5
        assert await limiter.admit("notify", [log], ["r7"], 2, 1.0) == [True]
    finally:
        await client.aclose()
