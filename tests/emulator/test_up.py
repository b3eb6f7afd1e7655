"""`emulator up` as a real subprocess on a throwaway app: it serves routes and tasks with the embedded Redis
and SQLite, a port in use is a clear error, Ctrl-C leaves nothing behind, a restart keeps queued tasks, and
the embedded Redis boots while the runtime is imported.

The helpers here (the app, `Emulator`, `start_emulator`) are shared with test_reload.py and test_invoke.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import Process, free_port, write_app

MANIFEST = """\
    app: emu-test
    defaults:
      retries: 0
    functions:
      hello:
        handler: app_mod:hello
        http: {path: /hello, methods: [GET]}
      start_job:
        handler: app_mod:start_job
        http: {path: /jobs, methods: [POST]}
      echo:
        handler: app_mod:echo
        http: {path: "/echo/{n:int}", methods: [POST]}
      add:
        handler: app_mod:add
        task: {}
      slow:
        handler: app_mod:slow
        task: {timeout: 60s}
      boom:
        handler: app_mod:boom
        task: {}
"""

MODULE = """\
    import asyncio

    from starlette.requests import Request

    from runtime import http, task

    MARKER = "{marker}"


    @http
    async def hello(request: Request):
        return {{"marker": MARKER}}


    @http
    async def start_job(request: Request):
        body = await request.json()
        run_id = await add.enqueue(a=body["a"], b=body["b"])
        return {{"run": run_id}}, 202


    @http
    async def echo(request: Request, n: int):
        body = await request.json()
        return {{"n": n, "body": body, "marker": MARKER}}


    @task
    async def add(a: int, b: int) -> int:
        return a + b


    @task
    async def slow(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "slept " + MARKER


    @task
    async def boom() -> None:
        raise ValueError("kaboom from the test task")
"""

TERMINAL = ("succeeded", "failed")


def module_source(marker: str) -> str:
    return MODULE.format(marker=marker)


def make_app(directory: Path, marker: str = "v1") -> Path:
    """The throwaway app; returns its folder."""
    write_app(directory, MANIFEST, {"app_mod.py": module_source(marker)})
    return directory


def set_marker(app: Path, marker: str) -> None:
    """Save app_mod.py with a new marker, as an editor would."""
    import textwrap

    (app / "app_mod.py").write_text(textwrap.dedent(module_source(marker)))


class Emulator:
    """A running `emulator up` and its URLs."""

    def __init__(self, process: Process, app: Path, port: int, dashboard_port: int) -> None:
        self.process = process
        self.app = app
        self.port = port
        self.dashboard_port = dashboard_port
        self.web = f"http://127.0.0.1:{port}"
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"

    def count(self, text: str) -> int:
        return sum(text in line for line in list(self.process.lines))

    def wait_for_count(self, text: str, count: int, timeout: float = 30.0) -> None:
        """Wait until `count` lines containing `text` were printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(text) >= count:
                return
            if self.process.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{count} x {text!r} not seen in {timeout} s; output:\n{self.process.output}")

    def state(self) -> dict[str, Any]:
        return dict(json.loads((self.app / ".emulator" / "state.json").read_text()))

    def enqueue(self, name: str, arguments: dict[str, Any], delay: float | None = None) -> dict[str, Any]:
        params = {"delay": str(delay)} if delay is not None else None
        response = httpx.post(f"{self.dashboard}/api/functions/{name}/runs", json=arguments, params=params, timeout=10)
        assert response.status_code == 202, response.text
        return dict(response.json())

    def run(self, run_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.dashboard}/api/runs/{run_id}", timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def wait_run(self, run_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["status"] in statuses:
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} not in {statuses} after {timeout} s: {run}\n{self.process.output}")

    def interrupt(self, timeout: float = 60.0) -> int:
        """Ctrl-C: SIGINT to the emulator's own process, then its exit code."""
        self.process.signal(signal.SIGINT)
        return self.process.wait(timeout)


def start_emulator(
    spawn: Callable[..., Process], app: Path, *extra: str, env: dict[str, str] | None = None, ready: bool = True
) -> Emulator:
    """`emulator up` in `app` on free ports, the embedded Redis and SQLite (REDIS_URL/DATABASE_URL unset)."""
    port, dashboard_port = free_port(), free_port()
    while dashboard_port == port:
        dashboard_port = free_port()
    process = spawn(
        ["emulator", "up", "--port", str(port), "--dashboard-port", str(dashboard_port), *extra], cwd=app, env=env or {}
    )
    emulator = Emulator(process, app, port, dashboard_port)
    if ready:
        process.wait_for("emulator ready", timeout=60)
    return emulator


def _proc_table() -> dict[int, tuple[int, str, str, str]]:
    """pid -> (parent pid, state, command line, working directory) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
            cmdline = raw.replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            cwd = ""
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), fields[0], cmdline, cwd)
    return table


def descendants(pid: int) -> set[int]:
    table = _proc_table()
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, *_) in table.items():
            if ppid == parent and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def in_app(app: Path) -> dict[int, tuple[int, str, str, str]]:
    """The processes working in the app's folder (the emulator, its children, the embedded Redis)."""
    root = str(app.resolve())
    return {pid: row for pid, row in _proc_table().items() if row[3] == root or row[3].startswith(root + "/")}


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# --- tests -----------------------------------------------------------------------------------------------


def test_up_serves_routes_and_runs_tasks(spawn: Callable[..., Process], tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    emulator = start_emulator(spawn, app)
    output = emulator.process.output
    assert "ready" in emulator.process.wait_for("emulator ready")
    assert f"{emulator.web}/hello" in output
    assert emulator.dashboard in output
    assert "embedded" in output
    assert ".emulator/runs.db" in output

    response = httpx.get(f"{emulator.web}/hello", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"marker": "v1"}

    # enqueued by an HTTP function
    response = httpx.post(f"{emulator.web}/jobs", json={"a": 2, "b": 40}, timeout=10)
    assert response.status_code == 202, response.text
    run = emulator.wait_run(response.json()["run"])
    assert run["status"] == "succeeded", run
    assert run["result"] == 42

    # enqueued through the dashboard API
    queued = emulator.enqueue("add", {"a": 1, "b": 2})
    assert queued["status"] in ("queued", "running", "succeeded")
    run = emulator.wait_run(queued["id"])
    assert run["status"] == "succeeded", run
    assert run["result"] == 3
    assert run["attempts"] == 1

    # the data lives under the app's .emulator/ folder, and state.json points at this emulator
    state = emulator.state()
    assert state["web"] == emulator.web
    assert state["dashboard"] == emulator.dashboard
    assert (app / ".emulator" / "runs.db").exists()
    assert (app / ".emulator" / "redis").is_dir()

    assert emulator.interrupt() == 0


def test_ctrl_c_leaves_no_process_behind(spawn: Callable[..., Process], tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    emulator = start_emulator(spawn, app)
    # something running in the worker when Ctrl-C comes: it is let finish, then everything stops
    run = emulator.enqueue("slow", {"seconds": 0.5})
    emulator.wait_run(run["id"], ("running", "succeeded"))
    state = emulator.state()
    redis_port = int(state["redis_url"].rsplit(":", 1)[1].split("/")[0])
    parent = emulator.process.process.pid
    assert state["pid"] == parent
    children = descendants(parent)
    assert len(children) >= 2, f"expected the app process and redis-server under {parent}: {children}"
    assert answers(redis_port) and answers(emulator.port) and answers(emulator.dashboard_port)

    assert emulator.interrupt() == 0
    emulator.process.wait_for("stopped")

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        table = _proc_table()
        left = {pid: table[pid] for pid in children | {parent} if pid in table}
        left |= {
            pid: row
            for pid, row in table.items()
            if f"--port {emulator.port} " in row[2] or f"127.0.0.1:{redis_port}" in row[2]
        }
        left |= in_app(app)
        if not left:
            break
        time.sleep(0.1)
    assert not left, f"processes left behind: {left}"
    assert not answers(redis_port), "the embedded Redis still answers"
    assert not answers(emulator.port) and not answers(emulator.dashboard_port)


def test_restart_keeps_a_queued_task(spawn: Callable[..., Process], tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    first = start_emulator(spawn, app)
    run = first.enqueue("add", {"a": 20, "b": 3}, delay=3)
    assert run["status"] == "scheduled", run
    assert first.interrupt() == 0  # stopped before the task was due

    second = start_emulator(spawn, app)
    assert second.run(run["id"])["status"] in ("scheduled", "queued", "running", "succeeded")
    done = second.wait_run(run["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["result"] == 23
    assert second.interrupt() == 0


def test_port_in_use_is_a_clear_error(spawn: Callable[..., Process], tmp_path: Path) -> None:
    app = make_app(tmp_path / "app")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        process = spawn(["emulator", "up", "--port", str(port), "--dashboard-port", str(free_port())], cwd=app, env={})
        assert process.wait(30) == 1
        assert "--port" in process.output
        assert str(port) in process.output
        assert "in use" in process.output
        assert "Traceback" not in process.output

        process = spawn(["emulator", "up", "--port", str(free_port()), "--dashboard-port", str(port)], cwd=app, env={})
        assert process.wait(30) == 1
        assert "--dashboard-port" in process.output
        assert "Traceback" not in process.output
    # nothing is left running for the app (the embedded Redis, spawned early, was stopped)
    assert not in_app(app)


SPAWN_PROBE = """
import sys

from emulator import cli, embedded_redis


def spawn(self, port=None):
    heavy = [name for name in ("sqlalchemy", "taskiq", "uvicorn", "runtime.app.connections") if name in sys.modules]
    print("imported when Redis was spawned:", heavy, flush=True)
    raise SystemExit(0)


embedded_redis.EmbeddedRedis.spawn = spawn
sys.exit(cli.main(sys.argv[1:]))
"""


def test_the_embedded_redis_boots_while_the_runtime_is_imported(spawn: Callable[..., Process], tmp_path: Path) -> None:
    """`emulator up` spawns redis-server before it imports the runtime (SQLAlchemy, taskiq, uvicorn: most of its
    start-up), so Redis boots on another core meanwhile rather than after them."""
    app = make_app(tmp_path / "app")
    args = ["up", "--port", str(free_port()), "--dashboard-port", str(free_port())]
    process = spawn(["python", "-c", SPAWN_PROBE, *args], cwd=app, env={})
    assert process.wait(60) == 0, process.output
    assert "imported when Redis was spawned: []" in process.output, process.output


def test_no_manifest_is_a_clear_error_and_starts_no_redis(spawn: Callable[..., Process], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    process = spawn(
        ["emulator", "up", "--port", str(free_port()), "--dashboard-port", str(free_port())],
        cwd=tmp_path / "empty",
        env={},
    )
    assert process.wait(30) == 1
    assert "manifest.yaml" in process.output and "Traceback" not in process.output, process.output
    assert not (tmp_path / "empty" / ".emulator").exists()
    assert not in_app(tmp_path / "empty")
