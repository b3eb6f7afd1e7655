"""A durable worker saves and reads its steps without importing SQLAlchemy or SQLModel: its steps, a sleep, a
step's retry and its run's retry go through the driver itself (runtime/store/step_sql.py). Importing them at the
first step held the worker's event loop ~0.2 s."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from tests.conftest import Process, write_app
from tests.runtime.workers import MARK, events, started_runtime, worker_env

MODULE = f"durable_imports_{uuid.uuid4().hex[:8]}"
SOURCE = (
    MARK
    + """
import os, sys
from runtime import Context, task

def heavy():
    return sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "sqlmodel"))

def flaky(n):
    flag = os.environ["TEST_LOG"] + ".flaky"
    if not os.path.exists(flag):
        open(flag, "w").close()
        raise RuntimeError("fails once")
    return n

@task
async def journey(ctx: Context) -> int:
    a = await ctx.step.run("a", lambda: 1)
    b = await ctx.step.run("b", flaky, 2, retries=1)
    await ctx.sleep("nap", 0.3)
    c = await ctx.step.run("c", lambda: 3)
    mark(fn="journey", attempt=ctx.attempt, heavy=heavy())
    if ctx.attempt == 1:
        raise RuntimeError("the run fails once after its steps")
    d = await ctx.step.run("d", lambda: 4)
    mark(fn="journey", attempt=ctx.attempt, heavy=heavy())
    return a + b + c + d
"""
)
MANIFEST = f"""
app: durable-imports
functions:
  journey: {{handler: "{MODULE}:journey", task: {{retries: 1, backoff: {{base: 50ms, max: 100ms}}}}}}
"""


async def test_a_durable_worker_runs_steps_a_sleep_and_retries_without_sqlalchemy(
    database_url: str, redis_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    app = write_app(tmp_path / "app", MANIFEST, {f"{MODULE}.py": SOURCE})
    env = worker_env(redis_url, tmp_path, DATABASE_URL=database_url)
    async with started_runtime(app, env) as runtime:  # the store at the head revision, as a deployment has it
        [run_id] = await runtime.enqueue(runtime.app.tasks["journey"], [{}])
        worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
        run = await runtime.wait(run_id, timeout=30)
        assert (run.status, run.result, run.attempts) == ("succeeded", 10, 2), worker.output
        steps = await runtime.store.steps.of_run(run_id)
    assert sorted(s["name"] for s in steps) == ["a", "b", "c", "d", "nap"]
    assert next(s for s in steps if s["name"] == "b")["attempts"] == 2
    marked = events(env, "journey")
    assert [e["attempt"] for e in marked] == [1, 2, 2]
    assert [e["heavy"] for e in marked] == [[], [], []]  # none of SQLAlchemy's or SQLModel's modules
