"""Durable runs under a worker SIGKILL storm: runs of 10 steps each go through while a random worker is
killed every second or two and restarted. Every run ends `succeeded`, nothing is lost, and no step body ran
after its result was saved: the saved result of each step is the token of that step's last execution, read
from the bodies' own side-effect log."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from runtime import Runtime
from runtime.settings import Settings
from tests.chaos.harness import FULL, SUMMARIES, Fleet, Killer, worker_env
from tests.conftest import write_app

pytestmark = pytest.mark.chaos

RUNS = 1_000 if FULL else 200
STEPS = 10
STORM_SECONDS = 60.0 if FULL else 12.0
KILL_EVERY = (1.0, 2.0)
DRAIN_TIMEOUT = 180.0 if FULL else 60.0

SOURCE = """
import asyncio, json, os, time, uuid
from runtime import Context, task

async def body(n, i):
    token = uuid.uuid4().hex
    with open(os.environ["CHAOS_LOG"], "a") as log:
        log.write(json.dumps({"run": n, "step": i, "token": token, "t": time.time()}) + "\\n")
    await asyncio.sleep(0.02)
    return token

@task
async def ten(ctx: Context, n: int) -> list:
    return [await ctx.step.run(f"s{i}", body, n, i) for i in range(10)]
"""

MANIFEST = """
app: durable-chaos
defaults: {retries: 10, backoff: {base: 100ms, max: 500ms}}
functions:
  ten: {handler: "durable_chaos:ten", task: {}}
"""


def bodies(log: Path) -> dict[tuple[int, int], list[str]]:
    """Each step's executions, in the order they began (their tokens)."""
    text = log.read_text() if log.exists() else ""
    runs: dict[tuple[int, int], list[tuple[float, str]]] = defaultdict(list)
    for line in text[: text.rfind("\n") + 1].splitlines():
        mark = json.loads(line)
        runs[(mark["run"], mark["step"])].append((mark["t"], mark["token"]))
    return {key: [token for _, token in sorted(marks)] for key, marks in runs.items()}


async def test_durable_runs_under_a_kill_storm_never_rerun_a_saved_step(
    redis_url: str, tmp_path: Path, effects_log: Path, fleets: Callable[..., Fleet]
) -> None:
    app = write_app(tmp_path / "app", MANIFEST, {"durable_chaos.py": SOURCE})
    database_url = f"sqlite:///{tmp_path}/runs.db"
    fleet = fleets(app, worker_env(redis_url, database_url, effects_log, LEASE_SECONDS="4"))
    runtime = Runtime.from_manifest(app, Settings(redis_url=redis_url, database_url=database_url))
    await runtime.start()
    try:
        fleet.start(3)
        ids = await runtime.app.tasks["ten"].enqueue_many([{"n": n} for n in range(RUNS)])
        started = time.monotonic()
        with Killer(fleet, KILL_EVERY):
            while time.monotonic() - started < STORM_SECONDS:
                await asyncio.sleep(0.2)
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while True:
            runs = {run.id: run for run in await runtime.store.list(limit=RUNS + 10)}
            if all(runs.get(i) is not None and runs[i].status in ("succeeded", "failed") for i in ids):
                break
            assert time.monotonic() < deadline, f"not drained: {sum(r.status != 'succeeded' for r in runs.values())}"
            await asyncio.sleep(0.5)
        executed = bodies(effects_log)
        reruns = sum(len(tokens) - 1 for tokens in executed.values())
        late = []
        for n, run_id in enumerate(ids):
            run = runs[run_id]
            assert run.status == "succeeded", (run.id, run.status, run.last_error)
            saved = {s["name"]: s["result"] for s in await runtime.store.steps.of_run(run_id)}
            assert run.result == [saved[f"s{i}"] for i in range(STEPS)]
            for i in range(STEPS):
                tokens = executed[(n, i)]
                if tokens[-1] != saved[f"s{i}"]:  # a body began after the one whose result was saved
                    late.append((n, i, len(tokens)))
        SUMMARIES.append(
            f"chaos durable-kill-storm: runs={RUNS} steps={RUNS * STEPS} kills={fleet.kills} "
            f"lost=0 step_reruns_before_save={reruns} step_reruns_after_save={len(late)}"
        )
        assert fleet.kills >= 4, f"set-up: only {fleet.kills} kills"
        assert late == [], f"step bodies ran after their result was saved: {late[:10]}"
    finally:
        await runtime.stop()
