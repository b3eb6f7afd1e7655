"""Debounce on a real worker: enqueues with the same key within the period make one run with the last arguments,
started a period after the last enqueue and no later than the timeout after the first; each key on its own; an
enqueue after the run started makes the next run. Counted from the task's side-effect log."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.errors import ArgumentsError
from runtime.flow.state import limits_now
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, wait_until

MODULE = f"debounce_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
from runtime import task

@task
async def settle(customer: str, n: int) -> None:
    mark(fn="settle", customer=customer, n=n)

@task
async def capped(n: int) -> None:
    mark(fn="capped", n=n)
"""
)

MANIFEST = f"""
app: debounce-test
functions:
  settle: {{handler: "{MODULE}:settle", task: {{debounce: {{period: 1s, key: customer}}}}}}
  capped: {{handler: "{MODULE}:capped", task: {{debounce: {{period: 1s, timeout: 2s}}}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("debounce"), MANIFEST, {f"{MODULE}.py": SOURCE})


async def test_a_hundred_enqueues_in_a_second_make_one_run_with_the_last(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    settle = rt.app.tasks["settle"]
    first = time.time()
    ids = []
    for n in range(100):
        ids.append(await settle.enqueue(customer="acme", n=n))
    last = time.time()
    assert last - first < 1.5  # about a second (two cores, shared with the worker): all within one period
    assert len(set(ids)) == 1  # every enqueue joined the one run
    done = await rt.wait(ids[0], timeout=15)
    assert done.status == "succeeded"
    assert done.arguments == {"customer": "acme", "n": 99}  # its record keeps the last arguments ...
    assert abs(done.enqueued_at.timestamp() - first) < 0.5  # ... and the first enqueue's time
    await asyncio.sleep(1.5)  # nothing else comes
    ran = events(env, "settle")
    assert [e["n"] for e in ran] == [99]
    assert 0.9 <= ran[0]["t"] - last < 1.8, ran[0]["t"] - last  # a period after the last enqueue
    [row] = [r for r in await limits_now(rt) if r["function"] == "settle"]  # `runtime limits` counts them
    assert (row["limit"], row["key"], row["debounced"]) == ("debounce", "acme", 99)


async def test_enqueues_that_never_stop_start_a_run_by_the_timeout(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    capped = rt.app.tasks["capped"]
    first = time.time()
    n = 0
    while time.time() - first < 3.5:  # an enqueue every 0.2 s: the 1 s period never passes quietly
        await capped.enqueue(n=n)
        n += 1
        await asyncio.sleep(0.2)
    await wait_until(lambda: any(e["n"] == n - 1 for e in events(env, "capped")), 10, "the last arguments' run")
    ran = events(env, "capped")
    assert 1.9 <= ran[0]["t"] - first < 2.6, ran[0]["t"] - first  # the first run started by first + timeout
    assert 2 <= len(ran) <= 3, ran  # later enqueues made the next run(s), not one each
    assert [e["n"] for e in ran] == sorted(e["n"] for e in ran)


async def test_each_key_gets_its_own_run(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    settle = rt.app.tasks["settle"]
    ids: dict[str, set[str]] = {"a": set(), "b": set()}
    for n in range(20):
        for customer in ("a", "b"):
            ids[customer].add(await settle.enqueue(customer=customer, n=n))
    assert len(ids["a"]) == len(ids["b"]) == 1 and ids["a"] != ids["b"]
    for run_ids in ids.values():
        assert (await rt.wait(run_ids.pop(), timeout=15)).status == "succeeded"
    await asyncio.sleep(1.5)
    assert sorted((e["customer"], e["n"]) for e in events(env, "settle")) == [("a", 19), ("b", 19)]


async def test_an_enqueue_after_the_run_started_makes_the_next_run(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    settle = rt.app.tasks["settle"]
    first = await settle.enqueue(customer="acme", n=1)
    await wait_until(lambda: len(events(env, "settle")) == 1, 10, "the first run")
    second = await settle.enqueue(customer="acme", n=2)
    assert await settle.enqueue(customer="acme", n=3) == second != first
    assert (await rt.wait(second, timeout=15)).status == "succeeded"
    await asyncio.sleep(1.5)
    assert [e["n"] for e in events(env, "settle")] == [1, 3]  # the started run kept its arguments


async def test_an_enqueue_after_a_cancel_makes_a_new_run(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    settle = rt.app.tasks["settle"]
    first = await settle.enqueue(customer="acme", n=1)
    assert (await rt.cancel(first)).status == "cancelled"
    second = await settle.enqueue(customer="acme", n=2)
    assert await settle.enqueue(customer="acme", n=3) == second != first  # a cancelled run is never joined
    assert (await rt.wait(second, timeout=15)).status == "succeeded"
    await asyncio.sleep(0.5)
    assert [e["n"] for e in events(env, "settle")] == [3]


async def test_delay_and_a_unique_key_do_not_apply_to_a_debounced_task(rt: Runtime) -> None:
    settle = rt.app.tasks["settle"]
    with pytest.raises(ArgumentsError, match="`delay` and `at` do not apply to a task with `debounce`"):
        await settle.with_options(delay=5).enqueue(customer="acme", n=1)
    with pytest.raises(ArgumentsError, match="`key` does not apply to a task with `debounce`"):
        await settle.with_options(key="once").enqueue(customer="acme", n=1)
