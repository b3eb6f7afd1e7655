"""Log lines about a run carry its `run_id`, `function`, `attempt` and `queue` as JSON fields, the lines a task
logs itself included (async tasks, and sync tasks in their own process); the text format stays readable."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from runtime import Runtime
from runtime.settings import Settings
from tests.conftest import write_app

MODULE = f"logged_{uuid.uuid4().hex[:8]}"
SOURCE = """
import logging
from runtime import task

log = logging.getLogger("myapp")

@task
async def greet(name: str) -> None:
    log.info("hello %s", name)

@task
def crunch(n: int) -> int:
    log.warning("crunching %d", n)
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("handled")
    return n
"""
MANIFEST = f"""
app: log-test
defaults: {{retries: 0, timeout: 30s, concurrency: 2}}
functions:
  greet: {{handler: "{MODULE}:greet", task: {{}}}}
  crunch: {{handler: "{MODULE}:crunch", task: {{}}}}
"""


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_app(tmp_path_factory.mktemp("app"), MANIFEST, {f"{MODULE}.py": SOURCE})


def run_tasks(app: Path, redis_url: str, database_url: str) -> dict[str, str]:
    async def go() -> dict[str, str]:
        async with Runtime.from_manifest(app, Settings(redis_url=redis_url, database_url=database_url)) as rt:
            ids = {
                "greet": await rt.app.tasks["greet"].enqueue(name="ada"),
                "crunch": await rt.app.tasks["crunch"].enqueue(n=4),
            }
            for run_id in ids.values():
                assert (await rt.wait(run_id, timeout=30)).status == "succeeded"
            return ids

    return asyncio.run(go())


def test_a_tasks_own_json_lines_carry_its_run(app: Path, redis_url: str, tmp_path: Path, spawn: Any) -> None:
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/r.db",
        "WORKER_HEALTH_PORT": "0",
        "LOG_FORMAT": "json",
    }
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    worker.wait_for("ready")
    ids = run_tasks(app, redis_url, env["DATABASE_URL"])
    hello = json.loads(worker.wait_for("hello ada"))
    assert hello["logger"] == "myapp" and hello["message"] == "hello ada"
    assert {k: hello[k] for k in ("run_id", "function", "attempt", "queue")} == {
        "run_id": ids["greet"],
        "function": "greet",
        "attempt": 1,
        "queue": "default",
    }
    assert "trace_id" not in hello  # tracing is off
    # a sync task logs in its own process: its lines reach the worker's log with the same fields
    crunching = json.loads(worker.wait_for("crunching 4"))
    assert (crunching["level"], crunching["run_id"], crunching["function"]) == ("warning", ids["crunch"], "crunch")
    handled = json.loads(worker.wait_for('"handled"'))
    assert handled["run_id"] == ids["crunch"] and "ZeroDivisionError" in handled["exception"]
    # the worker's own lines about the run gain the queue too
    start = json.loads(worker.wait_for(f"start greet {ids['greet']}"))
    assert start["queue"] == "default" and start["run_id"] == ids["greet"]


def test_text_lines_a_task_logs_name_their_run_briefly(app: Path, redis_url: str, tmp_path: Path, spawn: Any) -> None:
    env = {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{tmp_path}/r.db", "WORKER_HEALTH_PORT": "0"}
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env | {"LOG_FORMAT": "text"})
    worker.wait_for("ready")
    ids = run_tasks(app, redis_url, env["DATABASE_URL"])
    assert worker.wait_for("hello ada").endswith(f"myapp  hello ada  [run={ids['greet'][-8:]}]")
    assert worker.wait_for("crunching 4").endswith(f"[run={ids['crunch'][-8:]}]")
    # the worker's own lines already say which run: no marker added
    assert "[run=" not in worker.wait_for(f"start greet {ids['greet']}")
