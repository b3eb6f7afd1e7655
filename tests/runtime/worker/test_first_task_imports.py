"""A worker reaches its first task without importing SQLAlchemy (issue 25, worker spawn -> first task): the schema
revision is read, and its records written, by the driver itself (sqlite3, asyncpg); a database at an old revision
is still refused in one line."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from tests.conftest import Process, free_port, write_app
from tests.runtime.store.test_migrations import sync_url
from tests.runtime.workers import started_runtime, worker_env

MODULE = f"first_{uuid.uuid4().hex[:8]}"
SOURCE = """
import os, sys
from runtime import task

@task
async def look() -> str:
    seen = sorted(m for m in sys.modules if m.split(".")[0] in ("sqlalchemy", "sqlmodel"))
    with open(os.environ["TEST_LOG"], "a") as log:
        log.write(" ".join(seen) + "\\n")
    return "looked"
"""
MANIFEST = f"""
app: first-task
functions:
  look: {{handler: "{MODULE}:look", task: {{}}}}
"""


def marked_lines_of(env: dict[str, str]) -> list[str]:
    return Path(env["TEST_LOG"]).read_text().split("\n")[:-1]


def _app(tmp_path: Path) -> Path:
    return write_app(tmp_path / "app", MANIFEST, {f"{MODULE}.py": SOURCE})


async def test_a_worker_runs_its_first_task_without_sqlalchemy(
    database_url: str, redis_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    app = _app(tmp_path)
    env = worker_env(redis_url, tmp_path, DATABASE_URL=database_url)
    async with started_runtime(app, env) as runtime:  # the store at the head revision, as a deployment has it
        [run_id] = await runtime.enqueue(runtime.app.tasks["look"], [{}])
        worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
        run = await runtime.wait(run_id, timeout=30)
        assert (run.status, run.result) == ("succeeded", "looked"), worker.output
    assert marked_lines_of(env) == [""]  # none of SQLAlchemy's or SQLModel's modules


async def test_a_workers_metrics_scrape_reads_the_run_counts_without_sqlalchemy(
    database_url: str, redis_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    """Prometheus's scrape of a worker's /metrics reads the counts of unfinished runs by the driver: importing
    SQLAlchemy there held the worker's loop ~0.2 s at its first scrape."""
    app = _app(tmp_path)
    port = free_port()
    env = worker_env(redis_url, tmp_path, DATABASE_URL=database_url, WORKER_HEALTH_PORT=str(port))
    async with started_runtime(app, env) as runtime:
        [first] = await runtime.enqueue(runtime.app.tasks["look"], [{}])
        worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
        assert (await runtime.wait(first, timeout=30)).status == "succeeded", worker.output
        await runtime.enqueue(runtime.app.tasks["look"], [{}], delay=3600)  # one scheduled run to count
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=10)).text
        assert 'firstsip_runs{function="look",status="scheduled"} 1.0' in metrics, metrics
        [second] = await runtime.enqueue(runtime.app.tasks["look"], [{}])
        assert (await runtime.wait(second, timeout=30)).status == "succeeded", worker.output
    assert marked_lines_of(env) == ["", ""]


async def test_a_worker_refuses_a_database_stamped_at_an_older_revision(
    database_url: str, redis_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    app = _app(tmp_path)
    env = worker_env(redis_url, tmp_path, DATABASE_URL=database_url)
    async with started_runtime(app, env):
        pass
    engine = create_engine(sync_url(database_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
    engine.dispose()
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    assert worker.wait(30) == 1
    assert worker.lines[-1] == (
        "error: the run store's schema is at 0006, this runtime needs 0008: run `runtime db upgrade`"
    ), worker.output
    assert "Traceback" not in worker.output


def test_a_worker_that_cannot_reach_postgres_says_so(
    redis_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    app = _app(tmp_path)
    env = worker_env(redis_url, tmp_path, DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", STARTUP_TIMEOUT="1")
    worker = spawn(["runtime", "worker", "--manifest", str(app)], app.parent, env)
    assert worker.wait(30) == 1
    assert worker.lines[-1].startswith("error: cannot use "), worker.output
    assert "Start it or set DATABASE_URL" in worker.lines[-1], worker.output
    assert "Traceback" not in worker.output
