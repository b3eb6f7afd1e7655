"""Durable steps on real workers: a step whose result was saved never runs again, across retries of its run
and across a worker killed mid-run; names repeat with an occurrence; a step's spent retries raise
`StepFailed` in the function, and again, without running, on a later attempt; limits fail the run with the
reason. Step bodies are counted from their own side-effect log, never from our records."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from runtime import Context, StepFailed
from runtime.dashboard.app import create_dashboard_app
from tests.conftest import command, write_app
from tests.runtime.workers import MARK, events, start_worker, wait_until

MODULE = f"steps_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
import asyncio, functools, os
from runtime import Context, StepFailed, task

def first_time(tag):
    flag = os.environ["TEST_LOG"] + "." + tag
    if os.path.exists(flag):
        return False
    open(flag, "w").close()
    return True

def add_one(n):
    mark(fn="body", step="add_one", n=n)
    return {"n": n + 1}

async def double(n, *, by=2):
    mark(fn="body", step="double", n=n)
    return n * by

@task
async def flow(ctx: Context, n: int) -> int:
    mark(fn="flow", attempt=ctx.attempt)
    a = await ctx.step.run("add", add_one, n)
    b = await ctx.step.run("double", functools.partial(double, by=3), a["n"])
    if first_time(f"flow{n}"):
        raise RuntimeError("the code after the steps fails once")
    return b

@task
async def loop(ctx: Context) -> list:
    mark(fn="loop", attempt=ctx.attempt)
    charged = [await ctx.step.run("charge", add_one, i) for i in range(3)]
    x, y = await asyncio.gather(ctx.step.run("fan", double, 10), ctx.step.run("fan", double, 20))
    if first_time("loop"):
        raise RuntimeError("fails once after the steps")
    return [c["n"] for c in charged] + [x, y]

def always_fails(n):
    mark(fn="body", step="always_fails", n=n)
    raise ValueError(f"card {n} declined")

@task
async def compensate(ctx: Context) -> str:
    try:
        await ctx.step.run("charge", always_fails, 7, retries=1)
    except StepFailed as exc:
        refund = await ctx.step.run("refund", add_one, 0)
        if first_time("compensate"):
            raise RuntimeError("fails once after compensating")
        return f"compensated {exc.error_type}: {exc.message} / {refund}"
    return "charged"

@task
async def killed(ctx: Context) -> str:
    await ctx.step.run("before", add_one, 1)
    mark(fn="killed", phase="between", attempt=ctx.attempt)
    await asyncio.sleep(float(os.environ.get("NAP", "0")) if first_time("killed") else 0)
    await ctx.step.run("after", add_one, 2)
    return "done"

@task
async def not_json(ctx: Context) -> None:
    await ctx.step.run("set", lambda: {1, 2})

@task
def sync_steps(ctx: Context) -> str:
    try:
        ctx.step.run("a", add_one, 1)
    except RuntimeError as exc:
        return f"{ctx.run_id == os.environ.get('NOPE')}: {exc}"
    return "ran"

@task
async def many(ctx: Context) -> None:
    for i in range(5):
        await ctx.step.run("s", add_one, i)
"""
)

MANIFEST = f"""
app: steps-test
defaults: {{retries: 2, backoff: {{base: 50ms, max: 100ms}}}}
functions:
  flow: {{handler: "{MODULE}:flow", task: {{}}}}
  loop: {{handler: "{MODULE}:loop", task: {{}}}}
  compensate: {{handler: "{MODULE}:compensate", task: {{}}}}
  killed: {{handler: "{MODULE}:killed", task: {{}}}}
  not_json: {{handler: "{MODULE}:not_json", task: {{}}}}
  many: {{handler: "{MODULE}:many", task: {{}}}}
  sync_steps: {{handler: "{MODULE}:sync_steps", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("steps"), MANIFEST, {f"{MODULE}.py": SOURCE})


def bodies(env: dict[str, str]) -> Counter[tuple[str, int]]:
    return Counter((e["step"], e["n"]) for e in events(env, "body"))


async def test_a_saved_step_never_runs_again_when_the_run_is_retried(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["flow"].enqueue(n=4), timeout=30)
    assert (run.status, run.attempts, run.result) == ("succeeded", 2, 15)  # (4 + 1) * 3
    assert [e["attempt"] for e in events(env, "flow")] == [1, 2]  # the function ran twice ...
    assert bodies(env) == Counter({("add_one", 4): 1, ("double", 5): 1})  # ... each step once
    steps = await rt.store.steps.of_run(run.id)
    assert [(s["name"], s["status"], s["result"], s["attempts"]) for s in steps] == [
        ("add", "succeeded", {"n": 5}, 1),
        ("double", "succeeded", 15, 1),
    ]


async def test_a_repeated_name_gets_its_occurrence_and_gather_is_deterministic(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["loop"].enqueue(), timeout=30)
    assert (run.status, run.result) == ("succeeded", [1, 2, 3, 20, 40])
    assert sorted(s["name"] for s in await rt.store.steps.of_run(run.id)) == [
        "charge",
        "charge#2",
        "charge#3",
        "fan",
        "fan#2",
    ]
    once = [("add_one", 0), ("add_one", 1), ("add_one", 2), ("double", 10), ("double", 20)]
    assert bodies(env) == Counter(once)
    fan = {s["name"]: s["result"] for s in await rt.store.steps.of_run(run.id)}
    assert (fan["fan"], fan["fan#2"]) == (20, 40)  # named in the order written, whichever finished first


async def test_spent_step_retries_raise_step_failed_which_the_function_catches(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["compensate"].enqueue(), timeout=30)
    assert (run.status, run.attempts) == ("succeeded", 2)
    assert run.result == "compensated ValueError: card 7 declined / {'n': 1}"
    # 1 try + 1 retry of the step in the first attempt; the second attempt got the saved failure
    assert bodies(env) == Counter({("always_fails", 7): 2, ("add_one", 0): 1})
    charge = {s["name"]: s for s in await rt.store.steps.of_run(run.id)}["charge"]
    assert (charge["status"], charge["error_type"], charge["error"], charge["attempts"]) == (
        "failed",
        "ValueError",
        "card 7 declined",
        2,
    )


async def test_a_worker_killed_between_steps_redoes_only_the_unsaved_ones(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    first = start_worker(spawn, app, env, NAP="30")
    run_id = await rt.app.tasks["killed"].enqueue()
    await wait_until(lambda: len(events(env, "killed")) == 1, 20, "the first step to be saved")
    first.signal(signal.SIGKILL)
    first.wait(5)
    start_worker(spawn, app, env)
    run = await rt.wait(run_id, timeout=30)  # 2 s leases
    assert (run.status, run.result) == ("succeeded", "done")
    assert len(events(env, "killed")) == 2  # the code between steps ran again ...
    assert bodies(env) == Counter({("add_one", 1): 1, ("add_one", 2): 1})  # ... the saved step did not


async def test_a_result_that_is_not_json_or_too_many_steps_fail_the_run_at_once(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env, MAX_STEPS="3")
    not_json = await rt.wait(await rt.app.tasks["not_json"].enqueue(), timeout=30)
    assert (not_json.status, not_json.attempts, not_json.error_type) == ("failed", 1, "StepLimitExceeded")
    assert "step 'set' returned what cannot be saved as JSON" in (not_json.last_error or "")
    many = await rt.wait(await rt.app.tasks["many"].enqueue(), timeout=30)
    assert (many.status, many.attempts, many.error_type) == ("failed", 1, "StepLimitExceeded")
    assert "step 's#4': run" in (many.last_error or "") and "(MAX_STEPS)" in (many.last_error or "")
    assert len(await rt.store.steps.of_run(many.id)) == 3


async def test_a_sync_task_gets_its_context_and_a_clear_answer_about_steps(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["sync_steps"].enqueue(), timeout=30)
    assert (run.status, run.result) == (
        "succeeded",
        "False: step 'a': ctx.step works in an async task run by a worker (this Context has no run store)",
    )


async def test_deleting_a_run_deletes_its_steps(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["flow"].enqueue(n=1), timeout=30)
    assert len(await rt.store.steps.of_run(run.id)) == 2
    assert await rt.store.delete(run.id)
    assert await rt.store.steps.of_run(run.id) == []


async def test_step_names_and_options_are_checked_when_run_is_called() -> None:
    ctx = Context("r" * 32, 1)
    with pytest.raises(RuntimeError, match=r"ctx\.step works in an async task run by a worker"):
        ctx.step.run("a", print)
    for bad in ["", "a#2", "x" * 201, 3]:
        with pytest.raises(ValueError, match="a step's name is 1 to 200 characters without '#'"):
            ctx.step.run(bad, print)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="step 'b': fn must be a function, not int"):
        ctx.step.run("b", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="step 'c': retries must be a whole number from 0, not -1"):
        ctx.step.run("c", print, retries=-1)
    # the step's own arguments may be called anything: they are positional, the options keyword-only
    assert StepFailed("s", "ValueError", "no").step == "s"
    await asyncio.sleep(0)


async def test_runs_show_and_the_api_list_the_steps(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run = await rt.wait(await rt.app.tasks["flow"].enqueue(n=2), timeout=30)
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    full |= {"REDIS_URL": env["REDIS_URL"], "DATABASE_URL": env["DATABASE_URL"]}
    shown = await asyncio.to_thread(
        subprocess.run,
        [command("runtime"), "runs", "show", run.id, "--manifest", str(app)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    lines = [line for line in shown.stdout.splitlines() if line.startswith("step ")]
    assert [line.split()[1:3] for line in lines] == [["add", "succeeded"], ["double", "succeeded"]]
    assert lines[0].endswith(': {"n": 3}')
    transport = httpx.ASGITransport(app=create_dashboard_app(rt))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        body = (await client.get(f"/api/runs/{run.id}")).json()
    assert [(s["name"], s["result"]) for s in body["steps"]] == [("add", {"n": 3}), ("double", 9)]
