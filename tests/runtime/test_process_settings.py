"""Which Redis and which database the production processes use, as real subprocesses: each says so in its first
line (passwords hidden); with neither REDIS_URL nor DATABASE_URL set, in the folder of a running `emulator up`,
they use the emulator's (as the inspector does), and in the folder of a stopped one they refuse in one line
instead of starting a second, empty app on 127.0.0.1:6379 and a runs.db in the repository."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Process, command, free_port
from tests.emulator.test_up import make_app, start_emulator

PROCESSES = ["web", "worker", "scheduler", "dashboard"]


def test_a_worker_started_beside_the_emulator_uses_its_redis_and_database(
    spawn: Callable[..., Process], tmp_path: Path
) -> None:
    """README: `runtime worker --queues critical,default` in the emulator's folder."""
    app = make_app(tmp_path / "app")
    emulator = start_emulator(spawn, app)
    state = emulator.state()
    worker = spawn(["runtime", "worker", "--queues", "default"], cwd=app, env={"WORKER_HEALTH_PORT": "0"})
    line = worker.wait_for(" uses redis ")
    assert f"worker uses redis {state['redis_url']} and database {state['database_url']}" in line, line
    assert f"the emulator running in {app}" in line, line
    ready = worker.wait_for(" ready: ")
    name = ready.split("worker ", 1)[1].split(" ", 1)[0]
    deadline = time.monotonic() + 20
    while name not in httpx.get(f"{emulator.dashboard}/api/workers", timeout=10).text:  # it joined the emulator's
        assert time.monotonic() < deadline, worker.output
        time.sleep(0.1)
    assert not (app / "runs.db").exists()


@pytest.mark.parametrize("process", ["web", "worker", "scheduler"])
def test_in_a_stopped_emulators_folder_a_process_refuses_in_one_line(tmp_path: Path, process: str) -> None:
    app = make_app(tmp_path / "app")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (app / ".emulator").mkdir()
    state = {"pid": gone.pid, "redis_url": "redis://127.0.0.1:1/0", "database_url": "sqlite:///x.db"}
    (app / ".emulator" / "state.json").write_text(json.dumps(state))
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    result = subprocess.run([command("runtime"), process], cwd=app, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1, result.stderr
    assert "the emulator of" in result.stderr and "is not running" in result.stderr, result.stderr
    assert not (app / "runs.db").exists()


@pytest.mark.parametrize("process", PROCESSES)
def test_every_process_says_which_redis_and_database_it_uses(
    spawn: Callable[..., Process], tmp_path: Path, process: str
) -> None:
    app = make_app(tmp_path / "app")
    redis_url = f"redis://:redis-pass-123@127.0.0.1:{free_port()}/0"
    database_url = f"postgresql://user:pg-pass-456@127.0.0.1:{free_port()}/app"
    env = {"REDIS_URL": redis_url, "DATABASE_URL": database_url, "STARTUP_TIMEOUT": "1", "WORKER_HEALTH_PORT": "0"}
    port_option = ["--port", str(free_port())] if process in ("web", "dashboard") else []
    running = spawn(["runtime", process, *port_option], cwd=app, env=env)
    line = running.wait_for(" uses redis ")
    port = redis_url.rsplit(":", 1)[1]
    database = "postgresql+asyncpg://user:***@"
    assert f"{process} uses redis redis://:***@127.0.0.1:{port} and database {database}" in line, line
    assert "from REDIS_URL and DATABASE_URL" in line, line
    running.wait(30)  # neither answers: it gives up after STARTUP_TIMEOUT
    assert "redis-pass-123" not in running.output and "pg-pass-456" not in running.output, running.output
