"""`ctx.invoke` on real workers: the parent waits holding no worker, gets the child's result (or StepFailed
when the child failed), and a parent that resumes or is retried never queues its child twice. Counted from the
tasks' side-effect log."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_app
from tests.runtime.workers import MARK, events, start_worker

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
"""
)

MANIFEST = f"""
app: invoke-test
defaults: {{concurrency: 1, retries: 1, backoff: {{base: 50ms, max: 100ms}}}}
functions:
  child: {{handler: "{MODULE}:child", task: {{retries: 0}}}}
  parent: {{handler: "{MODULE}:parent", task: {{}}}}
"""


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
