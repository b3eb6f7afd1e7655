"""The systems the benchmark compares, and how each one's worker is started.

Every system is a real worker process started by the command its project ships, one process,
concurrency 5 where the system has the notion, against the harness's private Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from bench import procs

VENV_BIN = Path(sys.executable).parent
OURS_DIR = procs.REPO / "bench" / "apps" / "ours"
OURS_MANIFEST = OURS_DIR / "manifest.yaml"
ARQ_VENV = procs.REPO / "bench" / ".venvs" / "arq"
# the README's install (`pip install -e .`, no extras), for `emulator up` as a new user starts it: the bench's own
# venv has the `otel` extra, with which redis-py imports the OpenTelemetry SDK (~60 ms of a start)
PLAIN_VENV = procs.REPO / "bench" / ".venvs" / "plain"
CONCURRENCY = 5


@dataclass
class TaskSystem:
    key: str
    label: str
    module: str  # the app module: producer CLI and task definitions
    worker: Callable[[str], list[str]]  # mode ("throughput" | "startup") -> argv
    cwd: Path = procs.REPO
    python: Callable[[], str] = lambda: sys.executable
    check: Callable[[], str | None] = lambda: None  # -> why it can't run, or None
    records: bool = False  # needs DATABASE_URL (our run records)
    scaled: Callable[[int], list[str]] | None = None  # N worker processes -> argv (the scale-out table)
    bulk: bool = False  # the producer has a `bulk` mode (a quick fill where enqueueing is not measured)
    database: Callable[[Path], str] | None = None  # the run store's URL (default: SQLite in the run's folder)
    notes: str = ""

    def unavailable(self) -> str | None:
        return unavailable(self.check)

    def env(self, redis_url: str, tmpdir: Path) -> dict[str, str]:
        extra = {"REDIS_URL": redis_url}
        if self.records:
            extra["DATABASE_URL"] = self.database(tmpdir) if self.database else f"sqlite:///{tmpdir / 'runs.db'}"
            extra["LOG_LEVEL"] = "warning"  # as every baseline runs: no per-task log lines
        return procs.child_env(extra)

    def producer(self, mode: str, n: int, size: int | None = None) -> list[str]:
        sized = [] if size is None else ["--size", str(size)]
        return [self.python(), "-m", self.module, mode, str(n), *sized]


@cache
def unavailable(check: Callable[[], str | None]) -> str | None:
    """Why a system can't run here (its check, run once), or None."""
    try:
        return check()
    except Exception as exc:  # a check that crashes is a reason too
        return f"{type(exc).__name__}: {exc}"


def uvicorn_argv(app: str, port: int, *, reload: bool = False) -> list[str]:
    """uvicorn as the baselines run it: no access log, warning-level logs."""
    flags = ["--reload"] if reload else []
    return [
        str(VENV_BIN / "uvicorn"),
        app,
        *flags,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def emulator_argv(manifest: Path, port: int, bin_dir: Path = VENV_BIN) -> list[str]:
    """`emulator up` on loopback, its dashboard on a free port (the `emulator` of `bin_dir`'s venv)."""
    return [
        str(bin_dir / "emulator"),
        "up",
        "--manifest",
        str(manifest),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dashboard-port",
        str(procs.free_port()),
    ]


def _arq_python() -> str:
    return str(ARQ_VENV / "bin" / "python")


def _venv(path: Path, command: str, what: str, *install: str) -> str | None:
    """A virtualenv at `path` with `install` pip-installed into it, built once (when it has no `command` yet): None
    when it is there, else why not."""
    if (path / "bin" / command).exists():
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
        subprocess.run(
            [str(path / "bin" / "python"), "-m", "pip", "install", "-q", *install],
            check=True,
            timeout=600,
            cwd=procs.REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        return f"could not build {what} at {path}: {exc}"
    return None


def _ensure_arq() -> str | None:
    """arq pins redis-py < 6 and taskiq-redis needs >= 8: arq gets a virtualenv of its own."""
    return _venv(ARQ_VENV, "arq", "arq's virtualenv", "arq>=0.26")


def ensure_plain() -> str | None:
    """The README's install (`pip install -e .`, pinned by constraints.txt) in a venv of its own."""
    return _venv(PLAIN_VENV, "emulator", "the README's install", "-c", str(procs.REPO / "constraints.txt"), "-e", ".")


def _check_ours() -> str | None:
    exe = VENV_BIN / "runtime"
    if not exe.exists():
        return f"no `runtime` command in {VENV_BIN} (pip install -e . first)"
    probe = subprocess.run(
        [sys.executable, "-c", "from runtime import Runtime, task, http; import runtime.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=OURS_DIR,
        env=procs.child_env(),
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        return f"runtime does not provide Runtime/task/http/cli yet ({last})"
    return check_manifest(OURS_MANIFEST)


def check_manifest(manifest: Path) -> str | None:
    """`runtime check` accepts the manifest (run in its folder), or why not."""
    check = subprocess.run(
        [str(VENV_BIN / "runtime"), "check", "--manifest", str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=manifest.parent,
        env=procs.child_env(),
    )
    if check.returncode != 0:
        out = (check.stdout + check.stderr).strip().splitlines()
        return f"`runtime check` rejects {manifest.relative_to(procs.REPO)}: {' | '.join(out[-3:])}"
    return None


def _check_emulator() -> str | None:
    if not (VENV_BIN / "emulator").exists():
        return f"no `emulator` command in {VENV_BIN}"
    probe = subprocess.run(
        [str(VENV_BIN / "emulator"), "up", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=procs.child_env(),
    )
    if probe.returncode != 0:
        last = ((probe.stdout + probe.stderr).strip().splitlines() or ["?"])[-1]
        return f"`emulator up --help` fails: {last}"
    return None


def _taskiq(processes: int) -> list[str]:
    return [
        str(VENV_BIN / "taskiq"),
        "worker",
        "bench.apps.taskiq_app:broker",
        "--workers",
        str(processes),
        "--max-async-tasks",
        str(CONCURRENCY),
        "--log-level",
        "WARNING",
    ]


def _celery(mode: str) -> list[str]:
    pool = ["-P", "threads", "-c", str(CONCURRENCY)] if mode == "throughput" else ["-P", "solo"]
    return [
        str(VENV_BIN / "celery"),
        "-A",
        "bench.apps.celery_app",
        "worker",
        *pool,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        "WARNING",
    ]


OURS = TaskSystem(
    key="ours",
    label="ours (runtime worker, run records on)",
    module="bench.apps.ours_app",
    worker=lambda mode: [str(VENV_BIN / "runtime"), "worker", "--manifest", str(OURS_MANIFEST)],
    scaled=lambda n: [str(VENV_BIN / "runtime"), "worker", "--manifest", str(OURS_MANIFEST), "--processes", str(n)],
    cwd=OURS_DIR,
    check=_check_ours,
    records=True,
    bulk=True,
    notes="`runtime worker`, manifest concurrency 5, SQLite run records, LOG_LEVEL=warning",
)

BENCH_POSTGRES = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/bench")


def ensure_database(url: str) -> str | None:
    """Create `url`'s database on its Postgres server if missing; why it can't, or None."""
    import psycopg2

    server, _, name = url.rpartition("/")
    try:
        conn = psycopg2.connect(f"{server}/postgres", connect_timeout=3)
    except Exception as exc:
        return f"no Postgres at {server}: {str(exc).splitlines()[0]}"
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction (nor in `with conn`, which opens one)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return None


def _check_postgres() -> str | None:
    """Postgres reachable, with a database of the benchmark's own (created if missing)."""
    return ensure_database(BENCH_POSTGRES) or _check_ours()


_emptied: set[Path] = set()


def _fresh_postgres(tmpdir: Path) -> str:
    """The benchmark's Postgres database, emptied once per run (each run starts from no runs, as SQLite's
    does, in its own folder): the producer's and then the worker's environment name the same run, so the
    worker finds the records the fill wrote."""
    import psycopg2

    if tmpdir not in _emptied:
        _emptied.add(tmpdir)
        with psycopg2.connect(BENCH_POSTGRES) as conn, conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS runs, alembic_version CASCADE")
        conn.close()
    return BENCH_POSTGRES


OURS_POSTGRES = TaskSystem(
    key="ours-postgres",
    label="ours (runtime worker, run records on Postgres)",
    module="bench.apps.ours_app",
    worker=OURS.worker,
    scaled=OURS.scaled,
    bulk=True,
    cwd=OURS_DIR,
    check=_check_postgres,
    records=True,
    database=_fresh_postgres,
    notes="as ours, with the run records on the machine's Postgres (BENCH_POSTGRES_URL)",
)

TASK_SYSTEMS: list[TaskSystem] = [
    OURS,
    OURS_POSTGRES,
    TaskSystem(
        key="taskiq",
        label="bare taskiq (RedisStreamBroker)",
        module="bench.apps.taskiq_app",
        worker=lambda mode: _taskiq(1),
        scaled=lambda n: _taskiq(n),
        notes="`taskiq worker --workers 1 --max-async-tasks 5`, no result backend",
    ),
    TaskSystem(
        key="celery",
        label="Celery (Redis broker)",
        module="bench.apps.celery_app",
        worker=_celery,
        notes="`celery worker -P threads -c 5` (start-up: `-P solo`), results ignored, no gossip/mingle/heartbeat",
    ),
    TaskSystem(
        key="arq",
        label="arq",
        module="bench.apps.arq_app",
        worker=lambda mode: [str(ARQ_VENV / "bin" / "arq"), "bench.apps.arq_app.WorkerSettings"],
        python=_arq_python,
        check=_ensure_arq,
        notes="`arq`, max_jobs 5, poll_delay 10 ms, keep_result 0; own virtualenv (redis-py < 6)",
    ),
    TaskSystem(
        key="dramatiq",
        label="Dramatiq (Redis broker)",
        module="bench.apps.dramatiq_app",
        worker=lambda mode: [
            str(VENV_BIN / "dramatiq"),
            "-p",
            "1",
            "-t",
            str(CONCURRENCY),
            "bench.apps.dramatiq_app",
        ],
        notes="`dramatiq -p 1 -t 5`, default middleware",
    ),
    TaskSystem(
        key="redis-raw",
        label="raw redis-py consumer (XREADGROUP COUNT 100 + XACK)",
        module="bench.apps.raw_app",
        worker=lambda mode: [sys.executable, "-m", "bench.apps.raw_app", "work"],
        notes="the ceiling, not a task runtime: one stream, batches of 100, one XACK and one probe call per batch",
    ),
]
RAW = "redis-raw"

BASELINE_TASKS = "taskiq"


def task_system(key: str) -> TaskSystem:
    return next(s for s in TASK_SYSTEMS if s.key == key)


@dataclass
class WebSystem:
    key: str
    label: str
    argv: Callable[[int], list[str]]
    cwd: Path = procs.REPO
    check: Callable[[], str | None] = lambda: None
    records: bool = False

    def unavailable(self) -> str | None:
        return unavailable(self.check)

    def env(self, redis_url: str, tmpdir: Path) -> dict[str, str]:
        extra = {"REDIS_URL": redis_url}
        if self.records:
            extra["DATABASE_URL"] = f"sqlite:///{tmpdir / 'web-runs.db'}"
            extra["LOG_LEVEL"] = "warning"  # as uvicorn --no-access-log: no access lines
        return procs.child_env(extra)


WEB_SYSTEMS: list[WebSystem] = [
    WebSystem(
        key="ours",
        label="ours (runtime web)",
        argv=lambda port: [
            str(VENV_BIN / "runtime"),
            "web",
            "--manifest",
            str(OURS_MANIFEST),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=OURS_DIR,
        check=_check_ours,
        records=True,
    ),
    WebSystem(
        key="starlette",
        label="bare Starlette on uvicorn",
        argv=lambda port: uvicorn_argv("bench.apps.starlette_app:app", port),
    ),
    WebSystem(
        key="granian",
        label="bare Starlette on granian",
        argv=lambda port: [
            str(VENV_BIN / "granian"),
            "--interface",
            "asgi",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--log-level",
            "warning",
            "bench.apps.starlette_app:app",
        ],
        check=lambda: None if (VENV_BIN / "granian").exists() else f"no granian in {VENV_BIN}",
    ),
]

BASELINE_WEB = "starlette"
