"""What a process imports before its first task or answer (issue 25 point 6): modules that only some apps or
some calls need are imported where they are used, and still work there."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from runtime.app.connections import Runtime, session
from runtime.app.manifest import check_cron
from runtime.lazy_imports import HOMES
from runtime.settings import Settings
from tests.conftest import write_app
from tests.runtime.app.test_enqueue import make_app

# croniter (and dateutil under it) checks a schedule: an app with none never needs it; an AsyncSession (and the ORM
# under it) is for the app's own queries (`runtime.session()`), never for the run records, nor are the SQLModel
# classes, which a worker imports at its first write;
# the database's SQLAlchemy dialect is imported once the run store knows which one it is: never the other one;
# aiohttp is for taskiq's admin middleware, which we never use (runtime/lazy_imports.py)
DEFERRED = (
    "aiohttp",
    "croniter",
    "dateutil",
    "runtime.store.models",
    "sqlmodel",
    "sqlalchemy.orm",
    "sqlalchemy.dialects.postgresql",
    "sqlalchemy.dialects.sqlite",
)
# what each entry point must leave out: a worker, the inspector's commands (Runtime), `runtime web`; the dashboard
# and the scheduler, which the emulator starts before it says `ready` (they import croniter at the first schedule
# they show or fire: importing it runs `file` on the interpreter, ~15 ms of `emulator up` for an app with none), and
# what the emulator's supervisor imports before it forks the first generation; and loading an app (`runtime check`,
# a handler's `from runtime import task`), which needs no database library at all
LEFT_OUT = {
    # a worker's store reads its schema revision and writes its records with the driver (no SQLAlchemy before its
    # first task: tests/runtime/worker/test_first_task_imports.py runs one)
    "runtime.worker.worker": (*DEFERRED, "sqlalchemy", "sqlmodel"),
    "runtime.app.connections": (*DEFERRED, "sqlalchemy", "sqlmodel"),
    "runtime.web.app": DEFERRED,
    "runtime.dashboard.app": DEFERRED,
    "runtime.scheduler.scheduler": DEFERRED,
    "emulator.supervisor": DEFERRED,
    "runtime.app.application": (*DEFERRED, "sqlalchemy", "sqlmodel"),
}


@pytest.mark.parametrize("module", LEFT_OUT)
def test_an_entry_point_leaves_out_what_only_some_apps_use(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith({LEFT_OUT[module]!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()}"


@pytest.mark.parametrize("package", HOMES)
def test_a_lazily_loaded_package_lists_what_its_init_exports(package: str) -> None:
    init = Path(importlib.util.find_spec(package).origin)  # type: ignore[union-attr, arg-type]
    exported = {
        alias.asname or alias.name: node.module
        for node in ast.parse(init.read_text()).body
        if isinstance(node, ast.ImportFrom) and node.level == 1
        for alias in node.names
    }
    assert HOMES[package] == exported


def test_every_member_of_a_lazily_loaded_package_is_what_its_init_gives() -> None:
    """Each name as the package's own __init__ gives it (run in a process without the runtime), and submodules
    import as ever."""
    names = {package: sorted(homes) for package, homes in HOMES.items()}
    show = f"""
import importlib, json, sys
where = lambda v: v.__module__ + '.' + v.__qualname__
out = {{p: [where(getattr(importlib.import_module(p), n)) for n in ns] for p, ns in {names!r}.items()}}
out["all"] = {{p: sorted(getattr(importlib.import_module(p), "__all__", [])) for p in {names!r}}}
print(json.dumps(out))
"""
    plain = subprocess.run([sys.executable, "-c", show], capture_output=True, text=True, check=True, timeout=60)
    lazy = f"""
import sys, runtime.worker.worker
assert "aiohttp" not in sys.modules and "sqlalchemy.orm" not in sys.modules
{show}
import taskiq, sqlalchemy.ext.asyncio
from taskiq.middlewares import taskiq_admin_middleware
from sqlalchemy.ext.asyncio import exc
assert taskiq.middlewares.taskiq_admin_middleware is taskiq_admin_middleware and "aiohttp" in sys.modules
assert sqlalchemy.ext.asyncio.exc is exc
"""
    ours = subprocess.run([sys.executable, "-c", lazy], capture_output=True, text=True, timeout=60)
    assert ours.returncode == 0, ours.stderr[-2000:]
    assert json.loads(ours.stdout) == json.loads(plain.stdout)


def test_a_schedule_is_still_checked() -> None:
    check_cron("0 6 * * *")
    with pytest.raises(ValueError, match="not a valid cron expression"):
        check_cron("61 * * * *")
    with pytest.raises(ValueError, match="never fires"):
        check_cron("0 0 30 2 *")


def test_a_sqlite_store_leaves_out_the_postgres_dialect(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = f"""
import asyncio, sys
from runtime.store.models import Run
from runtime.store.values import utcnow
from runtime.store.runs import RunStore

async def main():
    store = RunStore("sqlite+aiosqlite:///{tmp_path}/r.db")
    await store.init()
    run = dict(id="r1", function="f", status="succeeded", enqueued_at=utcnow(), arguments={{}}, history=[], version=9)
    await store.update_many([run])  # the worker's upsert
    await store.insert_many([Run(id="r2", function="f", status="queued", enqueued_at=utcnow())])
    assert (await store.get("r1")).status == "succeeded" and (await store.get("r2")) is not None
    await store.close()

asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith("sqlalchemy.dialects.postgresql")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


async def test_a_session_still_queries_the_app_database(tmp_path, redis_url) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(redis_url=redis_url, database_url=f"sqlite:///{tmp_path}/r.db")
    async with Runtime.from_manifest(make_app(tmp_path), settings):
        async with session() as s:
            assert (await s.exec(text("select 1"))).one() == (1,)


# what a worker has not imported when its first task runs: the store's SQLModel classes and SQLAlchemy's ORM (it
# writes its records with the driver and a statement compiled at its first write), and aiohttp
BEFORE_THE_FIRST_TASK = ("sqlmodel", "sqlalchemy.orm", "runtime.store.models", "runtime.store.step_sql", "aiohttp")


async def test_a_worker_runs_its_first_task_before_importing_the_models(  # type: ignore[no-untyped-def]
    tmp_path, redis_url, database_url, spawn
) -> None:
    seen = tmp_path / "seen.json"
    manifest = write_app(
        tmp_path,
        """
        app: import-cost
        functions:
          first: {handler: "cost_functions:first", task: {}}
        """,
        {
            "cost_functions.py": f"""
                import json, sys
                from runtime import task

                @task
                async def first() -> str:
                    loaded = sorted(m for m in sys.modules if m.startswith({BEFORE_THE_FIRST_TASK!r}))
                    open({str(seen)!r}, "w").write(json.dumps(loaded))
                    return "done"
                """
        },
    )
    settings = Settings(redis_url=redis_url, database_url=database_url)
    async with Runtime.from_manifest(manifest, settings) as runtime:
        run_id = await runtime.app.tasks["first"].enqueue()
        env = {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "WORKER_HEALTH_PORT": "0"}
        spawn(["runtime", "worker", "--manifest", str(manifest)], manifest.parent, env)
        run = await runtime.wait(run_id, timeout=30)
    assert json.loads(seen.read_text()) == []
    assert run.status == "succeeded" and run.result == "done"  # and its records were written all the same
