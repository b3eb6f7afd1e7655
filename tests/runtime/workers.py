"""What the worker tests share: the tasks' side-effect log (counted instead of our records), a settings
environment, a `runtime worker` subprocess, the test's own runtime, and waiting on a condition."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from runtime import Runtime
from runtime.settings import Settings

# paste into a task module's source: `mark(fn=..., n=..., phase=...)` appends one line to TEST_LOG
MARK = """
import json, os, time

def mark(**event):
    event |= {"pid": os.getpid(), "t": time.time()}
    with open(os.environ["TEST_LOG"], "a") as log:
        log.write(json.dumps(event) + "\\n")
"""


def worker_env(redis_url: str, tmp_path: Path, **more: str) -> dict[str, str]:
    """A worker's settings: its own SQLite file and side-effect log, any free health port, 2 s leases."""
    return {
        "REDIS_URL": redis_url,
        "DATABASE_URL": f"sqlite:///{tmp_path}/runs.db",
        "TEST_LOG": str(tmp_path / "events.jsonl"),
        "WORKER_HEALTH_PORT": "0",
        "LEASE_SECONDS": "2",
        "SHUTDOWN_TIMEOUT": "10",
    } | more


def events(env: dict[str, str], fn: str | None = None) -> list[dict[str, Any]]:
    """The lines the tasks marked (of one function, or all)."""
    return marked_lines(Path(env["TEST_LOG"]), fn)


def marked_lines(path: Path, fn: str | None = None) -> list[dict[str, Any]]:
    """The whole lines of a side-effect log: a task still writing its line is read next time, not half now."""
    text = path.read_text() if path.exists() else ""
    whole = text[: text.rfind("\n") + 1]
    rows = [json.loads(line) for line in whole.splitlines()]
    return [r for r in rows if fn is None or r["fn"] == fn]


def start_worker(spawn: Any, app: Path, env: dict[str, str], *args: str, **more: str) -> Any:
    """A `runtime worker` subprocess (extra CLI args, extra env), once it says it is ready."""
    worker = spawn(["runtime", "worker", "--manifest", str(app), *args], app.parent, env | more)
    worker.wait_for("ready")
    return worker


def start_workers(spawn: Any, app: Path, env: dict[str, str], count: int, *args: str, **more: str) -> list[Any]:
    """`count` `runtime worker` subprocesses started together (each spends ~1.4 s importing), once all are ready."""
    started = [
        spawn(["runtime", "worker", "--manifest", str(app), *args], app.parent, env | more) for _ in range(count)
    ]
    for worker in started:
        worker.wait_for("ready")
    return started


async def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def started_runtime(app: Path, env: dict[str, str], **settings: Any) -> AsyncIterator[Runtime]:
    """The test's own runtime on the workers' Redis and database (its tasks, if run here, log to TEST_LOG)."""
    if "TEST_LOG" in env:
        os.environ["TEST_LOG"] = env["TEST_LOG"]
    runtime = Runtime.from_manifest(
        app, Settings(redis_url=env["REDIS_URL"], database_url=env["DATABASE_URL"], **settings)
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
