"""Concurrency limits across every worker, proven from the tasks' own start/end log: at most `limit` runs of a key
(or of a named limit, across functions) run at once on two worker processes; a key's backlog does not delay another
key; a SIGKILLed worker's slots come back within the lease; a cancel frees its slot at once; throttled starts are
spread at the rate, in order."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime import Runtime
from runtime.scheduler.reconciler import Reconciler
from tests.conftest import free_port, write_app
from tests.runtime.workers import MARK, events, start_worker, start_workers, wait_until

MODULE = f"limited_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio
import itertools
import json
from runtime import task

@task
async def per_customer(customer: dict, n: int, seconds: float = 0.3) -> None:
    mark(fn="per_customer", key=customer["id"], n=n, phase="start")
    await asyncio.sleep(seconds)
    mark(fn="per_customer", key=customer["id"], n=n, phase="end")

@task
async def ai_a(n: int) -> None:
    mark(fn="ai", n=n, phase="start")
    await asyncio.sleep(0.3)
    mark(fn="ai", n=n, phase="end")

@task
async def ai_b(n: int) -> None:
    mark(fn="ai", n=100 + n, phase="start")
    await asyncio.sleep(0.3)
    mark(fn="ai", n=100 + n, phase="end")

@task
async def spread(n: int) -> None:
    mark(fn="spread", n=n)
"""
)

MANIFEST = f"""
app: limits-test
defaults: {{concurrency: 5}}
limits:
  openai: {{concurrency: 3}}
functions:
  per_customer: {{handler: "{MODULE}:per_customer", task: {{concurrency: {{limit: 2, key: customer.id}}}}}}
  ai_a: {{handler: "{MODULE}:ai_a", task: {{limits: [openai]}}}}
  ai_b: {{handler: "{MODULE}:ai_b", task: {{limits: [openai]}}}}
  spread: {{handler: "{MODULE}:spread", task: {{throttle: {{limit: 10, period: 1s}}}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("limits"), MANIFEST, {f"{MODULE}.py": SOURCE})


def most_at_once(marks: list[dict[str, Any]], group: str | None = None) -> dict[Any, int]:
    """The largest number of runs (per key) between their start and end marks at any moment."""
    now: Counter[Any] = Counter()
    most: dict[Any, int] = defaultdict(int)
    for mark in sorted(marks, key=lambda m: (m["t"], m["phase"] == "start")):  # an end before a start at a tie
        key = mark.get(group) if group else None
        now[key] += 1 if mark["phase"] == "start" else -1
        most[key] = max(most[key], now[key])
    return dict(most)


async def test_at_most_limit_runs_of_a_key_run_at_once_across_workers(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    start_workers(spawn, app, env, 2)
    fn = rt.app.tasks["per_customer"]
    ids = await fn.enqueue_many([{"customer": {"id": key}, "n": n} for n in range(8) for key in ("a", "b", "c")])
    for run_id in ids:
        assert (await rt.wait(run_id, timeout=60)).status == "succeeded"
    marks = events(env, "per_customer")
    assert Counter((m["key"], m["phase"]) for m in marks) == {(k, p): 8 for k in "abc" for p in ("start", "end")}
    assert most_at_once(marks, "key") == {"a": 2, "b": 2, "c": 2}  # the limit, held, and reached


async def test_a_named_limit_is_shared_by_the_functions_that_name_it(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    start_workers(spawn, app, env, 2)
    ids = await rt.app.tasks["ai_a"].enqueue_many([{"n": n} for n in range(6)])
    ids += await rt.app.tasks["ai_b"].enqueue_many([{"n": n} for n in range(6)])
    for run_id in ids:
        assert (await rt.wait(run_id, timeout=60)).status == "succeeded"
    marks = events(env, "ai")
    assert len(marks) == 24
    assert most_at_once(marks) == {None: 3}


async def test_a_keys_backlog_does_not_delay_another_key(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    fn = rt.app.tasks["per_customer"]
    await fn.enqueue_many([{"customer": {"id": "deep"}, "n": n, "seconds": 1.0} for n in range(2000)])
    await asyncio.sleep(0.5)  # the backlog is in the queue, ahead of the other key's one run
    enqueued = time.time()
    other = await fn.enqueue(customer={"id": "other"}, n=0, seconds=0.0)
    assert (await rt.wait(other, timeout=30)).status == "succeeded"
    [start] = [m for m in events(env, "per_customer") if m["key"] == "other" and m["phase"] == "start"]
    assert start["t"] - enqueued < 1.0, start["t"] - enqueued  # within one task time of the deep key's
    deep = [m for m in events(env, "per_customer") if m["key"] == "deep"]
    assert most_at_once(deep, "key")["deep"] <= 2


async def test_a_killed_workers_slots_come_back_within_the_lease(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    doomed = start_worker(spawn, app, env)
    fn = rt.app.tasks["per_customer"]
    first = await fn.enqueue_many([{"customer": {"id": "k"}, "n": n, "seconds": 30.0} for n in range(2)])
    await wait_until(lambda: len(events(env, "per_customer")) == 2, 10, "both slots taken")
    start_worker(spawn, app, env)  # a worker that lives on (alone, a restarted one could not tell a kill from
    # a paused Redis, and would keep the holds a lease longer)
    doomed.signal(signal.SIGKILL)
    killed = time.time()
    for run_id in first:  # the killed runs are not run again (they would take the slots back)
        await rt.cancel(run_id, wait=0)
    later = await fn.enqueue_many([{"customer": {"id": "k"}, "n": 10 + n, "seconds": 0.0} for n in range(2)])
    for run_id in later:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    starts = [m for m in events(env, "per_customer") if m["phase"] == "start" and m["n"] >= 10]
    assert len(starts) == 2
    assert max(m["t"] for m in starts) - killed < 2.0 + 1.5  # the lease (2 s), then a sweep (every second)


async def test_cancelling_a_running_run_frees_its_slot_at_once(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    fn = rt.app.tasks["per_customer"]
    long = await fn.enqueue_many([{"customer": {"id": "c"}, "n": n, "seconds": 60.0} for n in range(2)])
    await wait_until(lambda: len(events(env, "per_customer")) == 2, 10, "both slots taken")
    waiting = await fn.enqueue(customer={"id": "c"}, n=5, seconds=0.0)
    await asyncio.sleep(1.0)
    assert await rt.store.get(waiting) is not None and (await rt.store.get(waiting)).status == "queued"  # type: ignore[union-attr]
    cancelled = time.time()
    await rt.cancel(long[0])
    assert (await rt.wait(waiting, timeout=10)).status == "succeeded"
    [start] = [m for m in events(env, "per_customer") if m["n"] == 5 and m["phase"] == "start"]
    assert start["t"] - cancelled < 1.0
    await rt.cancel(long[1])


async def test_throttled_starts_are_spread_at_the_rate_in_order(spawn: Any, app: Path, env, rt: Runtime) -> None:  # type: ignore[no-untyped-def]
    start_workers(spawn, app, env, 2)
    ids = await rt.app.tasks["spread"].enqueue_many([{"n": n} for n in range(30)])
    for run_id in ids:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    times = sorted(m["t"] for m in events(env, "spread"))
    assert len(times) == 30
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert 2.7 <= times[-1] - times[0] <= 3.3, times[-1] - times[0]  # 30 starts at 10 per second
    assert min(gaps) > 0.05, gaps  # spread, not in bursts


async def test_runtime_limits_shows_running_of_limit_and_waiting_per_key(
    spawn: Any, app: Path, env, rt: Runtime
) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    start_worker(spawn, app, env, WORKER_HEALTH_PORT=str(port))
    fn = rt.app.tasks["per_customer"]
    long = await fn.enqueue_many([{"customer": {"id": "acme"}, "n": n, "seconds": 60.0} for n in range(5)])
    await rt.app.tasks["spread"].enqueue_many([{"n": n} for n in range(100)])
    await wait_until(lambda: len([m for m in events(env, "per_customer") if m["key"] == "acme"]) == 2, 10, "2 run")
    await asyncio.sleep(0.5)  # the other 3 are parked
    listing = spawn(["runtime", "limits", "--json", "--manifest", str(app)], app.parent, env)
    assert listing.wait(30) == 0, listing.output
    rows = json.loads(listing.output[listing.output.index("[") :])
    [acme] = [r for r in rows if r["function"] == "per_customer" and r["key"] == "acme"]
    assert (acme["running"], acme["max"], acme["waiting"]) == (2, 2, 3), acme
    [openai] = [r for r in rows if r["limit"] == "openai"]
    assert (openai["function"], openai["running"], openai["max"]) == ("*", 0, 3)
    [throttle] = [r for r in rows if r["function"] == "spread"]
    # 100 starts at 10 a second: most wait for their turn (10 s: time for the CLI to start on a busy machine)
    assert throttle["throttled"] > 10, throttle
    table = spawn(["runtime", "limits", "--manifest", str(app)], app.parent, env)
    assert table.wait(30) == 0, table.output
    assert any(
        line.split()[:5] == ["per_customer", "concurrency", "customer.id", "acme", "2/2"]
        for line in table.output.splitlines()
    ), table.output
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
    line = 'firstsip_flow_running{function="per_customer",key="acme",limit="concurrency customer.id"} 2.0'
    assert line in metrics, [m for m in metrics.splitlines() if "flow" in m]
    assert 'firstsip_flow_waiting{function="per_customer",key="acme",limit="concurrency customer.id"} 3.0' in metrics
    for run_id in long:
        await rt.cancel(run_id, wait=0)


async def test_runs_waiting_for_a_slot_are_not_queued_again_by_the_reconciler(
    spawn: Any, app: Path, env, rt: Runtime
) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    fn = rt.app.tasks["per_customer"]
    ids = await fn.enqueue_many([{"customer": {"id": "r"}, "n": n, "seconds": 1.5} for n in range(5)])
    await wait_until(lambda: len(events(env, "per_customer")) == 2, 10, "2 running, 3 waiting for a slot")
    await asyncio.sleep(0.5)
    assert await Reconciler(rt, grace=0.2).reconcile() == []  # their messages wait in the limit's list
    for run_id in ids:
        assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
    assert Counter(m["n"] for m in events(env, "per_customer") if m["phase"] == "start") == dict.fromkeys(range(5), 1)


async def test_a_runs_slot_is_freed_with_its_ack_and_a_stopping_worker_frees_its_own(  # type: ignore[no-untyped-def]
    spawn: Any, app: Path, env, rt: Runtime
) -> None:
    """With no run waiting, a run's slot is freed with its ack (one call per commit), not left to lapse; a worker
    stopped while a run ends frees that run's slot before it exits (its last commit's releases are sent)."""
    worker = start_worker(spawn, app, env)
    fn = rt.app.tasks["per_customer"]
    running = rt.keys.flow("running:per_customer:0:s")
    assert (await rt.wait(await fn.enqueue(customer={"id": "s"}, n=0, seconds=0.0), timeout=10)).status == "succeeded"
    deadline = time.monotonic() + 1.0
    while await rt.broker.redis.zcard(running):
        assert time.monotonic() < deadline, "the slot was not freed within a second of the run's end"
        await asyncio.sleep(0.02)
    last = await fn.enqueue(customer={"id": "s"}, n=1, seconds=0.5)
    await wait_until(lambda: any(m["n"] == 1 for m in events(env, "per_customer")), 10, "the run to start")
    assert await rt.broker.redis.zcard(running) == 1
    worker.signal(signal.SIGTERM)  # it lets the run end, saves and acks it, then stops
    assert worker.wait(20) == 0
    assert (await rt.store.get(last)).status == "succeeded"  # type: ignore[union-attr]
    assert await rt.broker.redis.zcard(running) == 0  # freed before the exit, not left to lapse
