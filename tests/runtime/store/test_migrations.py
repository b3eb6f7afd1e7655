"""The run store's schema migrations: a database made by 0.1.0 (its DDL kept in tests/runtime/store/data) upgrades
with `runtime db upgrade` and keeps its rows; processes refuse an old schema in one line, create an empty
database at the head, and never import Alembic; the emulator upgrades by itself."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import MetaData, Table, create_engine, inspect, text

from runtime import Runtime
from runtime.dashboard.app import create_dashboard_app
from runtime.settings import Settings
from runtime.store.migrations import alembic_config
from runtime.store.models import Run, RunArguments, RunCount, Step
from runtime.store.runs import RunStore
from runtime.store.schema import SCHEMA_HEAD, SCHEMA_REVISIONS
from runtime.store.values import utcnow
from tests.conftest import Process, command, write_app
from tests.emulator.test_up import make_app, start_emulator

DATA = Path(__file__).resolve().parent / "data"
NOW = datetime(2026, 1, 2, 3, 4, 5, 678000)
NEW_COLUMNS = {"queue": "default", "error_type": None, "trace_id": None, "deadline": None, "idempotency_key": None}
REFUSAL = f"error: the run store's schema is at 0001, this runtime needs {SCHEMA_HEAD}: run `runtime db upgrade`"

# rows as 0.1.0 wrote them: one succeeded, one failed after a retry, one scheduled
OLD_ROWS: list[dict[str, Any]] = [
    {
        "id": "a" * 32,
        "function": "add",
        "arguments": {"a": 1, "b": 2},
        "status": "succeeded",
        "attempts": 1,
        "max_attempts": 4,
        "last_error": None,
        "enqueued_at": NOW,
        "scheduled_for": None,
        "started_at": NOW + timedelta(milliseconds=5),
        "finished_at": NOW + timedelta(milliseconds=9),
        "result": 3,
        "history": [],
        "replay_of": None,
        "version": 17672086451232,
    },
    {
        "id": "b" * 32,
        "function": "boom",
        "arguments": {"n": 7},
        "status": "failed",
        "attempts": 2,
        "max_attempts": 2,
        "last_error": "RuntimeError: boom number 7",
        "enqueued_at": NOW + timedelta(seconds=1),
        "scheduled_for": None,
        "started_at": NOW + timedelta(seconds=2),
        "finished_at": NOW + timedelta(seconds=3),
        "result": None,
        "history": [{"attempt": 1, "error": "RuntimeError: boom number 7", "at": 1767323046.0}],
        "replay_of": None,
        "version": 17672086481232,
    },
    {
        "id": "c" * 32,
        "function": "add",
        "arguments": {"a": 5, "b": 5},
        "status": "scheduled",
        "attempts": 0,
        "max_attempts": 4,
        "last_error": None,
        "enqueued_at": NOW + timedelta(seconds=2),
        "scheduled_for": NOW + timedelta(days=1),
        "started_at": None,
        "finished_at": None,
        "result": None,
        "history": [],
        "replay_of": "b" * 32,
        "version": 0,
    },
]

MODULE = """
from runtime import task


@task
async def add(a: int, b: int) -> int:
    return a + b


@task
async def boom(n: int = 0) -> None:
    raise RuntimeError(f"boom number {n}")
"""

MANIFEST = """
app: migrations-test
defaults: {retries: 0, timeout: 30s}
functions:
  add:
    handler: {module}:add
    task: {}
  boom:
    handler: {module}:boom
    task: {retries: 1}
"""


def sync_url(url: str) -> str:
    """The same database through a blocking driver (the test's own, as a 0.1.0 app would have left it)."""
    return url.replace("+aiosqlite", "").replace("+asyncpg", "").replace("postgresql://", "postgresql+psycopg2://")


def create_0_1_0(url: str, rows: list[dict[str, Any]] = OLD_ROWS) -> None:
    """A run store exactly as 0.1.0 created it (its DDL, no alembic_version), holding `rows`."""
    engine = create_engine(sync_url(url))
    dialect = "sqlite" if engine.dialect.name == "sqlite" else "postgres"
    ddl = (DATA / f"runs_0_1_0_{dialect}.sql").read_text()
    statements = [s for s in "\n".join(x for x in ddl.splitlines() if not x.startswith("--")).split(";") if s.strip()]
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        conn.execute(text("DROP TABLE IF EXISTS runs"))
        conn.execute(text("DROP TABLE IF EXISTS run_arguments"))
        conn.execute(text("DROP TABLE IF EXISTS run_counts"))
        conn.execute(text("DROP TABLE IF EXISTS steps"))
        for statement in statements:
            conn.execute(text(statement))
        table = Table("runs", MetaData(), autoload_with=conn)
        if rows:
            conn.execute(table.insert(), rows)
    engine.dispose()


def schema(url: str) -> tuple[set[str], set[str], str | None]:
    """The runs table's columns and indexes, and the recorded revision."""
    engine = create_engine(sync_url(url))
    with engine.connect() as conn:
        inspector = inspect(conn)
        columns = {c["name"] for c in inspector.get_columns("runs")}
        indexes = {str(i["name"]) for i in inspector.get_indexes("runs")}
        revision = None
        if inspector.has_table("alembic_version"):
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    return columns, indexes, revision


def runtime_command(*args: str, url: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(Path(sys.executable).parent), "DATABASE_URL": url, "HOME": str(cwd)}
    return subprocess.run(
        [command("runtime"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def expected_public(row: dict[str, Any]) -> dict[str, Any]:
    """What the API shows for an old row: its values as they were, the new columns at their defaults."""
    return Run.model_validate(row | NEW_COLUMNS).public()


def make_task_app(tmp_path: Path) -> Path:
    module = f"mig_{uuid.uuid4().hex[:12]}"
    return write_app(tmp_path / "app", MANIFEST.replace("{module}", module), {f"{module}.py": MODULE})


@pytest.fixture
async def runtime(tmp_path: Path, redis_url: str, database_url: str) -> AsyncIterator[Runtime]:
    """A Runtime on the test's database, not started (the test decides when)."""
    manifest = make_task_app(tmp_path)
    yield Runtime.from_manifest(manifest, Settings(redis_url=redis_url, database_url=database_url))


# --- the head ---------------------------------------------------------------------------------------


def test_the_head_constant_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory

    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_current_head() == SCHEMA_HEAD
    assert [s.revision for s in reversed(list(scripts.walk_revisions()))] == list(SCHEMA_REVISIONS)


def test_starting_a_process_never_imports_alembic(tmp_path: Path) -> None:
    """An empty database is created, then opened at the head, without Alembic (start-up time)."""
    url = f"sqlite+aiosqlite:///{tmp_path}/runs.db"
    script = (
        "import asyncio, sys\n"
        "import runtime.worker.worker\n"
        "from runtime.store.runs import RunStore\n"
        "async def main():\n"
        "    for _ in range(2):\n"
        f"        store = RunStore({url!r})\n"
        "        await store.init()\n"
        "        await store.close()\n"
        "asyncio.run(main())\n"
        "assert 'alembic' not in sys.modules, 'alembic was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert schema(url)[2] == SCHEMA_HEAD


# --- upgrading a 0.1.0 database -----------------------------------------------------------------------


async def test_a_0_1_0_database_upgrades_with_its_rows_intact(
    database_url: str, runtime: Runtime, tmp_path: Path
) -> None:
    create_0_1_0(database_url)
    assert schema(database_url)[2] is None

    done = runtime_command("db", "upgrade", url=database_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"upgraded from 0001 to {SCHEMA_HEAD}" in done.stdout

    columns, indexes, revision = schema(database_url)
    assert revision == SCHEMA_HEAD
    assert set(NEW_COLUMNS) <= columns
    assert {
        "ix_runs_status_enqueued_at_id",
        "ix_runs_function_enqueued_at_id",
        "ix_runs_idempotency_key",
        "ix_runs_finished_at",
    } <= indexes

    store = RunStore(Settings(database_url=database_url).database_url)  # the rows there before are counted
    assert await store.counts() == {"add": {"succeeded": 1, "scheduled": 1}, "boom": {"failed": 1}}
    await store.close()

    await runtime.start()
    try:
        transport = httpx.ASGITransport(app=create_dashboard_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://dashboard") as client:
            listed = (await client.get("/api/runs")).json()
            assert listed == [expected_public(row) for row in reversed(OLD_ROWS)]
            failed = (await client.get("/api/runs", params={"status": "failed"})).json()
            assert [run["id"] for run in failed] == ["b" * 32]
            one = (await client.get(f"/api/runs/{'c' * 32}")).json()
            assert one == expected_public(OLD_ROWS[2]) | {"steps": []}  # one run: its steps too
            assert one["queue"] == "default" and one["scheduled_for"] == "2026-01-03T03:04:05.678000+00:00"
    finally:
        await runtime.stop()


async def test_the_upgraded_schema_is_the_models(database_url: str) -> None:
    """Migrating 0.1.0 to the head gives what a fresh install creates from `Run` (no drift)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    create_0_1_0(database_url, rows=[])
    runtime_command("db", "upgrade", url=database_url, cwd=Path.cwd())
    metadata = MetaData()
    Run.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    RunArguments.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    RunCount.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    Step.__table__.to_metadata(metadata)  # type: ignore[attr-defined]
    engine = create_engine(sync_url(database_url))
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_server_default": True})
        assert compare_metadata(context, metadata) == []
    engine.dispose()


def test_upgrade_is_idempotent_and_creates_an_empty_database(database_url: str, tmp_path: Path) -> None:
    url = database_url
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        conn.execute(text("DROP TABLE IF EXISTS runs"))
        conn.execute(text("DROP TABLE IF EXISTS run_arguments"))
        conn.execute(text("DROP TABLE IF EXISTS run_counts"))
        conn.execute(text("DROP TABLE IF EXISTS steps"))
    engine.dispose()
    first = runtime_command("db", "upgrade", url=url, cwd=tmp_path)
    assert first.returncode == 0 and f"created at {SCHEMA_HEAD}" in first.stdout, first.stdout + first.stderr
    assert schema(database_url)[2] == SCHEMA_HEAD

    create_0_1_0(database_url)
    upgrades = [runtime_command("db", "upgrade", url=url, cwd=tmp_path) for _ in range(2)]
    assert [u.returncode for u in upgrades] == [0, 0], [u.stderr for u in upgrades]
    assert f"upgraded from 0001 to {SCHEMA_HEAD}" in upgrades[0].stdout
    assert f"already at {SCHEMA_HEAD}" in upgrades[1].stdout
    assert schema(database_url)[2] == SCHEMA_HEAD


def test_db_upgrade_names_an_unreachable_database(tmp_path: Path) -> None:
    done = runtime_command("db", "upgrade", url="postgresql://app:hunter2@127.0.0.1:1/nowhere", cwd=tmp_path)
    assert done.returncode == 1
    where = "DATABASE_URL=postgresql+asyncpg://app:***@127.0.0.1:1/nowhere"
    assert done.stderr.startswith(f"error: cannot upgrade the database at {where}: ")
    assert "hunter2" not in done.stderr and "Traceback" not in done.stderr


def test_the_kubernetes_pods_upgrade_an_old_database_before_they_start(database_url: str, tmp_path: Path) -> None:
    """Each rendered pod's init container is `runtime db upgrade`, run with the pod's own settings: a new
    release deployed on a 0.1.0 store brings it to the head before its processes meet it."""
    from runtime.app.manifest_file import parse_manifest
    from runtime.deploy.k8s import render_kubernetes

    text = MANIFEST.replace("{module}", "app")
    objects = render_kubernetes(parse_manifest(yaml.safe_load(text)), text, "first-sip:test")
    settings = next(o for o in objects if o["metadata"]["name"].endswith("-settings"))["data"]
    pods = [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"]
    inits = [pod["initContainers"] for pod in pods if pod["containers"][0]["name"] != "redis"]
    assert len(inits) == 3  # worker, scheduler, dashboard (this app has no routes: no web)
    args = {tuple(container["args"]) for (container,) in inits}
    assert args == {("db", "upgrade")}

    create_0_1_0(database_url)
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), **settings, "DATABASE_URL": database_url}
    done = subprocess.run(
        [command("runtime"), "db", "upgrade"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"upgraded from 0001 to {SCHEMA_HEAD}" in done.stdout
    assert schema(database_url)[2] == SCHEMA_HEAD


# --- processes on an old, an empty and a newer schema -----------------------------------------------------


async def test_a_worker_refuses_an_old_schema_in_one_line(
    database_url: str, runtime: Runtime, spawn: Callable[..., Process]
) -> None:
    create_0_1_0(database_url)
    env = {"REDIS_URL": runtime.settings.redis_url, "DATABASE_URL": database_url, "WORKER_HEALTH_PORT": "0"}
    worker = spawn(["runtime", "worker"], cwd=runtime.app.path.parent, env=env)
    assert worker.wait(30) == 1
    assert worker.lines[-1] == REFUSAL, worker.output
    assert "Traceback" not in worker.output
    assert schema(database_url)[2] is None  # left as it was


@pytest.mark.parametrize("kind", ["web", "scheduler", "dashboard"])
def test_every_process_refuses_an_old_schema(
    kind: str, sqlite_url: str, redis_url: str, tmp_path: Path, spawn: Callable[..., Process]
) -> None:
    manifest = make_task_app(tmp_path)
    create_0_1_0(sqlite_url)
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url, "WORKER_HEALTH_PORT": "0"}
    process = spawn(["runtime", kind, *(["--port", "0"] if kind in ("web", "dashboard") else [])], manifest.parent, env)
    assert process.wait(30) == 1
    assert process.lines[-1] == REFUSAL, process.output


async def test_a_worker_runs_tasks_on_an_upgraded_database(
    database_url: str, runtime: Runtime, spawn: Callable[..., Process], tmp_path: Path
) -> None:
    create_0_1_0(database_url)
    assert runtime_command("db", "upgrade", url=database_url, cwd=tmp_path).returncode == 0
    env = {"REDIS_URL": runtime.settings.redis_url, "DATABASE_URL": database_url, "WORKER_HEALTH_PORT": "0"}
    worker = spawn(["runtime", "worker"], cwd=runtime.app.path.parent, env=env)
    worker.wait_for("ready", timeout=30)
    async with runtime:
        ids = await runtime.enqueue(runtime.app.tasks["add"], [{"a": i, "b": 1} for i in range(20)])
        runs = [await runtime.wait(run_id, timeout=30) for run_id in ids]
        assert [(r.status, r.result, r.queue) for r in runs] == [("succeeded", i + 1, "default") for i in range(20)]
        [failed] = await runtime.enqueue(runtime.app.tasks["boom"], [{"n": 3}])
        run = await runtime.wait(failed, timeout=30)
        assert (run.status, run.attempts, run.queue) == ("failed", 2, "default")
        assert await runtime.store.get("a" * 32) == Run.model_validate(OLD_ROWS[0] | NEW_COLUMNS)


async def test_a_worker_row_without_the_new_columns_gets_their_defaults(database_url: str) -> None:
    """The worker's upsert carries only what it knows; a row it creates first is valid, and the enqueue's
    late insert still brings what only the enqueue knows."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    worker_row = {k: v for k, v in OLD_ROWS[0].items() if k not in ("scheduled_for", "replay_of")}
    worker_row |= {"id": "d" * 32, "status": "running", "enqueued_at": utcnow()}
    await store.update_many([worker_row])
    saved = await store.get("d" * 32)
    assert saved is not None and (saved.status, saved.queue, saved.idempotency_key) == ("running", "default", None)
    late = Run(id="d" * 32, function="add", status="queued", enqueued_at=utcnow(), queue="low", trace_id="t" * 32)
    await store.insert_many([late])
    saved = await store.get("d" * 32)
    assert saved is not None and (saved.status, saved.queue, saved.trace_id) == ("running", "low", "t" * 32)
    await store.close()


def test_processes_starting_at_once_on_an_empty_database_all_start(database_url: str, tmp_path: Path) -> None:
    url = Settings(database_url=database_url).database_url
    engine = create_engine(sync_url(database_url))
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        conn.execute(text("DROP TABLE IF EXISTS runs"))
        conn.execute(text("DROP TABLE IF EXISTS run_arguments"))
        conn.execute(text("DROP TABLE IF EXISTS run_counts"))
        conn.execute(text("DROP TABLE IF EXISTS steps"))
    engine.dispose()
    script = (
        "import asyncio\n"
        "from runtime.store.runs import RunStore\n"
        "async def main():\n"
        f"    store = RunStore({url!r})\n"
        "    await store.init()\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    starters = [subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(p.wait(60), p.stderr.read() if p.stderr else "") for p in starters]
    assert all(code == 0 for code, _ in outcomes), outcomes
    assert schema(database_url)[2] == SCHEMA_HEAD


async def test_a_schema_newer_than_this_runtime_is_used_as_it_is(database_url: str) -> None:
    """Migrations only add, so an older runtime keeps working while a newer one rolls out."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    await store.close()
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.close()


# --- the emulator ---------------------------------------------------------------------------------------


def test_the_emulator_upgrades_a_0_1_0_database_by_itself(tmp_path: Path, spawn: Callable[..., Process]) -> None:
    app = make_app(tmp_path / "app")
    manifest = app / "manifest.yaml"  # the old failed run (2026-01-02) must outlive the scheduler's first prune
    manifest.write_text(manifest.read_text().replace("retries: 0", "retries: 0\n  dead_retention: 3650d", 1))
    (app / ".emulator").mkdir()
    url = f"sqlite:///{app / '.emulator' / 'runs.db'}"
    create_0_1_0(url)
    emulator = start_emulator(spawn, app)
    assert f"upgraded the run store from 0001 to {SCHEMA_HEAD}" in emulator.process.output
    # a failed run (old succeeded ones are pruned), with its steps (none)
    assert emulator.run("b" * 32) == expected_public(OLD_ROWS[1]) | {"steps": []}
    run = emulator.wait_run(emulator.enqueue("add", {"a": 2, "b": 3})["id"])
    assert (run["status"], run["result"], run["queue"]) == ("succeeded", 5, "default")
    assert schema(url)[2] == SCHEMA_HEAD
    assert emulator.interrupt() == 0
