"""`ctx.invoke` on real workers: the parent waits holding no worker, gets the child's result (or StepFailed
when the child failed), and a parent that resumes or is retried never queues its child twice. Counted from the
tasks' side-effect log."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.scheduler.reconciler import Reconciler
from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker, started_runtime

MODULE = f"invoke_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio, os
from runtime import Context, StepFailed, task

@task
async def child(n: int, nap: float = 0) -> int:
    mark(fn="child", n=n)
    await asyncio.sleep(nap)
    if n < 0:
        raise ValueError(f"no score for {n}")
    return n + 1

@task
async def parent(ctx: Context, n: int, nap: float = 0) -> object:
    mark(fn="parent", attempt=ctx.attempt)
    try:
        score = await ctx.invoke("score", child, n=n, nap=nap)
    except StepFailed as exc:
        return f"caught {exc.error_type}: {exc.message}"
    flag = os.environ["TEST_LOG"] + f".parent{n}"
    if not os.path.exists(flag):
        open(flag, "w").close()
        raise RuntimeError("the parent fails once after its child")
    return score * 10

@task
async def dozer(ctx: Context) -> int:
    mark(fn="dozer")
    await ctx.sleep("nap", 60)
    return 1

@task
async def waker(ctx: Context) -> object:
    mark(fn="waker", attempt=ctx.attempt)
    try:
        return await ctx.invoke("doze", dozer)
    except StepFailed as exc:
        return f"caught {exc.error_type}: {exc.message}"
"""
)

MANIFEST = f"""
app: invoke-test
defaults: {{concurrency: 1, retries: 1, backoff: {{base: 50ms, max: 100ms}}}}
functions:
  child: {{handler: "{MODULE}:child", task: {{retries: 0}}}}
  parent: {{handler: "{MODULE}:parent", task: {{}}}}
  dozer: {{handler: "{MODULE}:dozer", task: {{retries: 0}}}}
  waker: {{handler: "{MODULE}:waker", task: {{}}}}
"""


# the child on a queue of its own, so its message can be lost before any worker serves that queue
KIDS_MANIFEST = MANIFEST.replace("app: invoke-test", "app: invoke-test\nqueues: {default: 1, kids: 1}").replace(
    "task: {retries: 0}", "task: {retries: 0, queue: kids}"
)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("invoke"), MANIFEST, {f"{MODULE}.py": SOURCE})


async def test_the_parent_gets_its_childs_result_and_never_queues_it_twice(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)  # one slot: the child can only run because the waiting parent holds none
    run = await rt.wait(await rt.app.tasks["parent"].enqueue(n=4, nap=0.5), timeout=30)
    assert (run.status, run.result, run.attempts) == ("succeeded", 50, 2)
    assert [e["n"] for e in events(env, "child")] == [4]  # once, across the parent's resume and retry
    steps = await rt.store.steps.of_run(run.id)
    assert [(s["name"], s["status"], s["result"]) for s in steps] == [("score", "succeeded", 5)]
    children = [r for r in await rt.store.list(limit=10) if r.function == "child"]
    assert [(c.status, c.result) for c in children] == [("succeeded", 5)]


async def test_a_failed_child_is_step_failed_in_the_parent(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["parent"].enqueue(n=-1), timeout=30)
    assert run.status == "succeeded"
    assert run.result.startswith("caught ValueError: child run ") and run.result.endswith("no score for -1")


async def lose_the_child(rt: Runtime, parent: str) -> str:
    """Once the parent waits for its child, Redis loses the child's message before any worker took it (no worker
    serves its queue); returns the child's id."""
    for _ in range(200):
        if (
            await rt.broker.redis.xlen(rt.keys.queue("kids").stream)
            and (await rt.store.get(parent)).status == "waiting"
        ):  # type: ignore[union-attr]
            break
        await asyncio.sleep(0.05)
    await rt.broker.redis.delete(rt.keys.queue("kids").stream)
    await asyncio.sleep(0.3)
    [child] = [r.id for r in await rt.store.list(limit=10) if r.function == "child"]
    return child


async def test_a_child_whose_message_was_lost_still_wakes_its_parent(spawn: Any, tmp_path: Path, env) -> None:  # type: ignore[no-untyped-def]
    """The reconciler sends the lost child's message again from its record: the parent's link goes with it."""
    app = write_app(tmp_path / "kids", KIDS_MANIFEST, {f"{MODULE}.py": SOURCE})
    async with started_runtime(app, env) as rt:
        start_worker(spawn, app, env, "--queues", "default")  # the parent's queue only
        parent = await rt.app.tasks["parent"].enqueue(n=7)
        child = await lose_the_child(rt, parent)
        assert await Reconciler(rt, grace=0.2).reconcile() == [child]  # the parent's message is in Redis still
        start_worker(spawn, app, env, "--queues", "kids")
        run = await rt.wait(parent, timeout=20)  # at once, not at its wait's end (a year)
        assert (run.status, run.result) == ("succeeded", 80)
        assert [e["n"] for e in events(env, "child")] == [7]


async def test_a_lost_child_the_reconciler_fails_fails_its_parents_step(spawn: Any, tmp_path: Path, env) -> None:  # type: ignore[no-untyped-def]
    app = write_app(tmp_path / "kids", KIDS_MANIFEST, {f"{MODULE}.py": SOURCE})
    async with started_runtime(app, env) as rt:
        start_worker(spawn, app, env, "--queues", "default")
        parent = await rt.app.tasks["parent"].enqueue(n=8)
        child = await lose_the_child(rt, parent)
        del rt.app.tasks["child"]  # the scheduler's manifest has it no more: the reconciler fails the lost child
        assert await Reconciler(rt, grace=0.2).reconcile() == [child]
        run = await rt.wait(parent, timeout=20)
        assert run.status == "succeeded" and run.result.startswith(f"caught ChildFailed: child run {child} failed: ")
        assert run.result.endswith("function 'child' is no longer in the manifest; restore it, then replay this run")


async def child_of(rt: Runtime, function: str, status: str) -> str:
    """The id of the one run of `function` once it is `status` (within 10 s)."""
    for _ in range(200):
        runs = [r for r in await rt.store.list(limit=20) if r.function == function and r.status == status]
        if runs:
            return runs[0].id
        await asyncio.sleep(0.05)
    raise AssertionError(f"no {function} run became {status}")


async def finished_events(rt: Runtime, child: str) -> list[dict[bytes, bytes]]:
    """The child's finished events in the app's event log: each one its parent was told."""
    sent = await rt.broker.redis.xrange(rt.keys.events)
    return [fields for _, fields in sent if fields[b"name"] == f"run.r{child}.finished".encode()]


async def test_a_child_cancelled_while_it_sleeps_wakes_its_parent_at_once(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    """No worker holds a sleeping child, so the cancel tells its parent (which waited out its wait, a year, before)."""
    start_worker(spawn, app, env)
    parent = await rt.app.tasks["waker"].enqueue()
    child = await child_of(rt, "dozer", "waiting")  # asleep for 60 s, holding no worker
    assert (await rt.cancel(child)).status == "cancelled"
    started = asyncio.get_running_loop().time()
    run = await rt.wait(parent, timeout=10)
    assert asyncio.get_running_loop().time() - started < 5
    assert (run.status, run.result) == ("succeeded", f"caught ChildFailed: child run {child} cancelled:")
    assert len(await finished_events(rt, child)) == 1
    assert [e["fn"] for e in events(env)].count("dozer") == 1


async def test_a_queued_child_cancelled_tells_its_parent_once(spawn: Any, tmp_path: Path, env) -> None:  # type: ignore[no-untyped-def]
    """The cancel tells the parent; the worker that meets the child's message later acks it, and its telling
    again is ignored: one finished event, and the child never runs."""
    app = write_app(tmp_path / "kids", KIDS_MANIFEST, {f"{MODULE}.py": SOURCE})
    async with started_runtime(app, env) as rt:
        start_worker(spawn, app, env, "--queues", "default")  # nobody serves the child's queue yet
        parent = await rt.app.tasks["parent"].enqueue(n=9)
        child = await child_of(rt, "child", "queued")
        assert (await rt.cancel(child)).status == "cancelled"
        run = await rt.wait(parent, timeout=10)
        assert (run.status, run.result) == ("succeeded", f"caught ChildFailed: child run {child} cancelled:")
        kids = start_worker(spawn, app, env, "--queues", "kids")
        kids.wait_for(f"cancelled child {child}", timeout=10)  # met the cancelled child's message, told again
        assert len(await finished_events(rt, child)) == 1
        assert events(env, "child") == []
