"""`raise RetryAfter(seconds)` on a real worker: the run starts again that much later at the same attempt (no
failure counted, so a task with `retries: 0` runs again), async and sync; it fails, saying why, past
MAX_RETRY_AFTER times or past its deadline. Executions are counted from the tasks' side-effect log."""

from __future__ import annotations

import asyncio
import os
import pickle
import subprocess
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from runtime import RetryAfter, Runtime
from tests.conftest import command, write_app
from tests.runtime.workers import MARK, events, start_worker, started_runtime, worker_env

MODULE = f"retry_after_{uuid.uuid4().hex[:8]}"

SOURCE = (
    MARK
    + """
from datetime import timedelta
from runtime import Context, RetryAfter, task

@task
async def asks(ctx: Context, flag: str, seconds: float) -> str:
    mark(fn="asks", phase="start", attempt=ctx.attempt)
    first = not os.path.exists(flag)
    open(flag, "a").close()
    mark(fn="asks", phase="end", attempt=ctx.attempt)
    if first:
        raise RetryAfter(timedelta(seconds=seconds))
    return "done"

@task
async def always(seconds: float) -> None:
    mark(fn="always")
    raise RetryAfter(seconds)

def note(tag: str) -> None:
    mark(fn="step", step=tag)

def once(tag: str, flag: str) -> str:
    mark(fn="step", step=tag)
    first = not os.path.exists(flag)
    open(flag, "a").close()
    if first:
        raise RetryAfter(0.5)
    return tag

@task
async def stepper(ctx: Context, flag: str) -> list:
    before = await ctx.step.run("before", note, "before")
    return [before, await ctx.step.run("call", once, "call", flag)]

@task
def sync_asks(flag: str, seconds: float) -> int:
    mark(fn="sync_asks", phase="start")
    first = not os.path.exists(flag)
    open(flag, "a").close()
    mark(fn="sync_asks", phase="end")
    if first:
        raise RetryAfter(seconds)
    return os.getpid()
"""
)

MANIFEST = f"""
app: retry-after-test
defaults: {{retries: 0, concurrency: 2}}
functions:
  asks: {{handler: "{MODULE}:asks", task: {{}}}}
  always: {{handler: "{MODULE}:always", task: {{}}}}
  sync_asks: {{handler: "{MODULE}:sync_asks", task: {{}}}}
  stepper: {{handler: "{MODULE}:stepper", task: {{retries: 2}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("retry_after"), MANIFEST, {f"{MODULE}.py": SOURCE})


@pytest.fixture
def env(redis_url: str, tmp_path: Path) -> dict[str, str]:
    return worker_env(redis_url, tmp_path, LOG_LEVEL="info")


@pytest.fixture
async def rt(app: Path, env: dict[str, str]) -> AsyncIterator[Runtime]:
    async with started_runtime(app, env) as runtime:
        yield runtime


async def test_a_run_asked_to_retry_after_2s_starts_again_2s_later_at_the_same_attempt(  # type: ignore[no-untyped-def]
    spawn: Any, app: Path, env, rt, tmp_path: Path
) -> None:
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["asks"].enqueue(flag=str(tmp_path / "asked"), seconds=2)
    done = await rt.wait(run_id, timeout=30)
    assert (done.status, done.attempts, done.result) == ("succeeded", 1, "done")  # retries: 0, and it ran again
    marks = events(env, "asks")
    assert [(m["phase"], m["attempt"]) for m in marks] == [("start", 1), ("end", 1), ("start", 1), ("end", 1)]
    waited = marks[2]["t"] - marks[1]["t"]
    assert 2.0 <= waited < 3.5, waited
    assert [(h["attempt"], h["error_type"], h["error"]) for h in done.history] == [
        (1, "RetryAfter", "retry after 2s (not counted as a failure)"),
        (1, None, None),
    ]
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    full |= {"REDIS_URL": env["REDIS_URL"], "DATABASE_URL": env["DATABASE_URL"]}
    shown = await asyncio.to_thread(
        subprocess.run,
        [command("runtime"), "runs", "show", run_id, "--manifest", str(app)],
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    attempts = [line for line in shown.stdout.splitlines() if line.startswith("attempt ")]
    assert len(attempts) == 2 and attempts[0].endswith(": asked to retry after 2s (not counted as a failure)")


async def test_a_run_is_retrying_while_it_waits_out_its_retry_after(spawn: Any, app: Path, env, rt, tmp_path) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    run_id = await rt.app.tasks["asks"].enqueue(flag=str(tmp_path / "asked"), seconds=3)
    for _ in range(200):
        run = await rt.store.get(run_id)
        if run is not None and run.history:
            break
        await asyncio.sleep(0.05)
    assert run is not None and (run.status, run.attempts, run.finished_at) == ("retrying", 1, None)
    assert (await rt.wait(run_id, timeout=30)).status == "succeeded"


async def test_a_run_asking_more_often_than_the_cap_fails_saying_so(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env, MAX_RETRY_AFTER="3")
    done = await rt.wait(await rt.app.tasks["always"].enqueue(seconds=0.1), timeout=30)
    assert done.status == "failed"
    assert len(events(env, "always")) == 4  # asked 3 times and went on; the 4th time it fails
    assert done.last_error == "asked to retry after 0.1s 4 times; the cap is 3 per run (MAX_RETRY_AFTER)"
    assert done.error_type == "RetryAfter"
    assert [h["attempt"] for h in done.history] == [1, 1, 1, 1]


async def test_a_retry_after_past_the_runs_deadline_fails_it_saying_so(  # type: ignore[no-untyped-def]
    spawn: Any, app: Path, env, rt, tmp_path: Path
) -> None:
    start_worker(spawn, app, env)
    asks = rt.app.tasks["asks"].with_options(deadline=3)
    done = await rt.wait(await asks.enqueue(flag=str(tmp_path / "asked"), seconds=5), timeout=30)
    assert done.status == "failed"
    assert [m["phase"] for m in events(env, "asks")] == ["start", "end"]  # not run again
    assert done.last_error is not None and done.last_error.startswith(
        "asked to retry after 5s (RetryAfter), past the run's deadline ("
    )


async def test_a_sync_task_raising_retry_after_runs_again(spawn: Any, app: Path, env, rt, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    done = await rt.wait(await rt.app.tasks["sync_asks"].enqueue(flag=str(tmp_path / "asked"), seconds=1), timeout=30)
    assert (done.status, done.attempts) == ("succeeded", 1)
    marks = events(env, "sync_asks")
    assert [m["phase"] for m in marks] == ["start", "end", "start", "end"]
    assert 1.0 <= marks[2]["t"] - marks[1]["t"] < 2.5
    assert [h["error_type"] for h in done.history] == ["RetryAfter", None]


async def test_a_step_raising_retry_after_starts_the_run_again_later_without_saving_the_step(  # type: ignore[no-untyped-def]
    spawn: Any, app: Path, env, rt, tmp_path: Path
) -> None:
    start_worker(spawn, app, env)
    done = await rt.wait(await rt.app.tasks["stepper"].enqueue(flag=str(tmp_path / "asked")), timeout=30)
    assert (done.status, done.attempts, done.result) == ("succeeded", 1, [None, "call"])
    assert [e["step"] for e in events(env, "step")] == ["before", "call", "call"]  # not a step retried with backoff
    assert [h["error_type"] for h in done.history] == ["RetryAfter", None]


async def test_a_bad_retry_after_is_a_failed_attempt_naming_retry_after(spawn: Any, app: Path, env, rt) -> None:  # type: ignore[no-untyped-def]
    start_worker(spawn, app, env)
    done = await rt.wait(await rt.app.tasks["always"].enqueue(seconds=-1), timeout=30)
    assert (done.status, done.error_type) == ("failed", "ValueError")
    assert done.last_error is not None and "RetryAfter takes more than 0" in done.last_error
    assert len(events(env, "always")) == 1  # retries: 0


def test_retry_after_takes_seconds_or_a_timedelta_and_crosses_a_process_boundary() -> None:
    asked = pickle.loads(pickle.dumps(RetryAfter(timedelta(milliseconds=1500))))
    assert (type(asked), asked.seconds, str(asked)) == (RetryAfter, 1.5, "retry after 1.5s (not counted as a failure)")
    for bad in (0, -1, float("nan"), 400 * 86400):
        with pytest.raises(ValueError, match="RetryAfter"):
            RetryAfter(bad)
    for wrong in ("2", None, True):
        with pytest.raises(TypeError, match="RetryAfter"):
            RetryAfter(wrong)  # type: ignore[arg-type]
