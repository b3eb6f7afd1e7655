"""Secrets stay secret and nothing listens or writes where it should not: redaction of passwords and tokens
in logs, run records and API answers (the example app and real processes); Redis with a password; the
health servers' and the dashboard's addresses; the run store's folder; private emulator files."""

from __future__ import annotations

import http.server
import io
import json
import logging
import os
import socket
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.embedded_redis import redis_server_binary
from runtime.errors import ConfigError
from runtime.logs import configure_logging
from runtime.redaction import redact, register_secret, reload_secrets
from runtime.settings import Settings, get_settings
from runtime.store.runs import RunStore
from tests.conftest import ROOT, Process, free_port, wait_for_port

SECRET = "hunter2-s3cret"


# -- redact() ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://user:hunter2@host/x", "http://user:***@host/x"),
        ("redis://:hunter2@redis:6379/0", "redis://:***@redis:6379/0"),
        ("postgresql+asyncpg://app:p%40ss@db:5432/runs", "postgresql+asyncpg://app:***@db:5432/runs"),
        ("DATABASE_URL='postgresql://app:p@ss@db/x' is bad", "DATABASE_URL='postgresql://app:***@db/x' is bad"),
        (
            "for url 'http://u:pw@h:1/?topic=x'\nnext line http://a:b@c",
            "for url 'http://u:***@h:1/?topic=x'\nnext line http://a:***@c",
        ),
        ('{"url": "https://u:pw@h/"}', '{"url": "https://u:***@h/"}'),
        # what is not a password stays
        ("http://host:8080/path and mail bob@example.com", "http://host:8080/path and mail bob@example.com"),
        ("redis://user@host:6379/0", "redis://user@host:6379/0"),
        ("no url here: a:b@c", "no url here: a:b@c"),
    ],
)
def test_redact_hides_passwords_in_urls(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_hides_configured_secrets_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_TOKEN", "dashboard-token-0123456789")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-pass-42@r:6379/0")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db%2Fpass@db/x")
    reload_secrets()
    text = "token dashboard-token-0123456789, AUTH redis-pass-42 failed; db/pass and db%2Fpass"
    assert redact(text) == "token ***, AUTH *** failed; *** and ***"
    register_secret("registered-secret-value")
    assert redact("it is registered-secret-value") == "it is ***"
    monkeypatch.undo()
    reload_secrets()


# -- logs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_and_tracebacks_are_redacted(log_format: str) -> None:
    stream = io.StringIO()
    settings = Settings(log_format=log_format, dashboard_token="the-dashboard-token-1234")  # type: ignore[arg-type]
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(settings, stream)
        logger = logging.getLogger("test.security")
        logger.info(
            "fetching http://user:%s@source/x with the-dashboard-token-1234",
            SECRET,
            extra={"url": f"redis://:{SECRET}@r"},
        )
        try:
            raise RuntimeError(f"cannot reach http://user:{SECRET}@source/x")
        except RuntimeError:
            logger.exception("failed")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    output = stream.getvalue()
    assert SECRET not in output and "the-dashboard-token-1234" not in output
    assert "http://user:***@source/x" in output and "RuntimeError" in output
    if log_format == "json":
        lines = [json.loads(line) for line in output.splitlines()]
        assert lines[0]["url"] == "redis://:***@r"
        assert "Traceback" in lines[1]["exception"]


# -- the example app end to end ------------------------------------------------------------------------


class FailingSource(http.server.BaseHTTPRequestHandler):
    """A briefing source that answers 500 (httpx then names the URL, password included, in its error)."""

    def do_GET(self) -> None:
        self.send_response(500)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def failing_source() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FailingSource)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def poll(url: str, until: str, timeout: float = 40.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        briefing = dict(httpx.get(url, timeout=10).json())
        if briefing.get("status") == until or time.monotonic() > deadline:
            return briefing
        time.sleep(0.1)


@pytest.mark.parametrize(
    ("source", "log_format"), [("closed port", "text"), ("answers 500", "text"), ("answers 500", "json")]
)
def test_a_password_in_briefing_source_url_appears_nowhere(
    spawn: Callable[..., Process], redis_url: str, sqlite_url: str, failing_source: int, source: str, log_format: str
) -> None:
    port = free_port() if source == "closed port" else failing_source
    source_url = f"http://user:{SECRET}@127.0.0.1:{port}/briefing"
    web_port, dashboard_port = free_port(), free_port()
    env = {
        "REDIS_URL": redis_url,
        "DATABASE_URL": sqlite_url,
        "BRIEFING_SOURCE_URL": source_url,
        "WORKER_HEALTH_PORT": "0",
        "LOG_FORMAT": log_format,
        "LOG_LEVEL": "debug",
    }
    processes = [
        spawn(["runtime", "web", "--host", "127.0.0.1", "--port", str(web_port)], ROOT, env),
        spawn(["runtime", "dashboard", "--port", str(dashboard_port)], ROOT, env),
        spawn(["runtime", "worker"], ROOT, env),
    ]
    processes[2].wait_for("ready")
    wait_for_port(web_port)
    wait_for_port(dashboard_port)
    base = f"http://127.0.0.1:{web_port}"
    created = httpx.post(f"{base}/briefings", json={"topic": "leak"}, timeout=10).json()
    briefing = poll(f"{base}/briefings/{created['id']}", "failed")
    assert briefing["status"] == "failed" and briefing["error"], briefing

    # the run record, as the dashboard shows it and as it is stored
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    [run] = httpx.get(f"{dashboard}/api/runs", params={"function": "generate_briefing"}, timeout=10).json()
    assert run["status"] == "failed" and run["attempts"] == 4
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        stored = json.dumps(db.execute("select last_error, history from runs").fetchall())
    for text, where in [
        (json.dumps(briefing), "GET /briefings/{id}"),
        (json.dumps(run), "GET /api/runs"),
        (stored, "the runs table"),
        ("\n".join(p.output for p in processes), "the logs"),
    ]:
        assert SECRET not in text, f"the password is in {where}:\n{text}"
    if source == "answers 500":  # the error names the source, without its password
        assert "user:***@127.0.0.1" in briefing["error"], briefing["error"]
    assert "***" in "\n".join(p.output for p in processes) or source == "closed port"


# -- Redis with a password -----------------------------------------------------------------------------


@pytest.fixture
def redis_with_password(tmp_path: Path) -> Iterator[str]:
    """A redis-server started with --requirepass; its URL, without the password."""
    port = free_port()
    process = subprocess.Popen(
        [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--requirepass", SECRET, "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


EXAMPLE_TASK = {"REDIS_URL": "", "BRIEFING_SOURCE_LATENCY": "0.05", "WORKER_HEALTH_PORT": "0"}


def test_worker_runs_tasks_on_a_redis_with_a_password(
    spawn: Callable[..., Process], redis_with_password: str, sqlite_url: str
) -> None:
    with_password = redis_with_password.replace("redis://", f"redis://:{SECRET}@")
    web_port = free_port()
    env = EXAMPLE_TASK | {"REDIS_URL": with_password, "DATABASE_URL": sqlite_url}
    web = spawn(["runtime", "web", "--host", "127.0.0.1", "--port", str(web_port)], ROOT, env)
    worker = spawn(["runtime", "worker"], ROOT, env)
    worker.wait_for("ready")
    wait_for_port(web_port)
    created = httpx.post(f"http://127.0.0.1:{web_port}/briefings", json={"topic": "auth"}, timeout=10).json()
    assert poll(f"http://127.0.0.1:{web_port}/briefings/{created['id']}", "completed")["status"] == "completed"
    assert SECRET not in web.output + worker.output

    # the same password from REDIS_PASSWORD (as the Kubernetes Secret gives it), joined to REDIS_URL
    env = EXAMPLE_TASK | {"REDIS_URL": redis_with_password, "REDIS_PASSWORD": SECRET, "DATABASE_URL": sqlite_url}
    spawn(["runtime", "worker"], ROOT, env).wait_for("ready")


@pytest.mark.parametrize("password", [None, "wrong-password"])
def test_a_missing_or_wrong_redis_password_is_one_clear_line(
    spawn: Callable[..., Process], redis_with_password: str, sqlite_url: str, password: str | None
) -> None:
    url = redis_with_password.replace("redis://", f"redis://:{password}@") if password else redis_with_password
    worker = spawn(["runtime", "worker"], ROOT, EXAMPLE_TASK | {"REDIS_URL": url, "DATABASE_URL": sqlite_url})
    assert worker.wait(30) == 1
    assert "cannot reach Redis at REDIS_URL=" in worker.output
    assert "Traceback" not in worker.output
    assert SECRET not in worker.output and (password is None or password not in worker.output)
    assert len(worker.output.strip().splitlines()) == 1, worker.output


def test_a_bad_redis_url_does_not_print_its_password() -> None:
    get_settings.cache_clear()
    os.environ["REDIS_URL"] = f"http://:{SECRET}@redis:6379/0"
    try:
        with pytest.raises(ConfigError, match="REDIS_URL") as error:
            get_settings()
        assert SECRET not in str(error.value)
    finally:
        del os.environ["REDIS_URL"]
        get_settings.cache_clear()


# -- where things listen -------------------------------------------------------------------------------


def listening_address(pid: int, port: int, timeout: float = 10.0) -> str:
    """The address a process listens on at `port`, from /proc/net/tcp (IPv4). Waits for a listener: a worker
    or scheduler answers /health with 503 while it starts, closes that server, then opens its own on the same
    port, so a look in between finds none."""
    deadline = time.monotonic() + timeout
    while True:
        inodes = set()
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except FileNotFoundError:  # closed since the listing: the process opens and closes files as it starts
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            address, state, inode = fields[1], fields[3], fields[9]
            host, port_hex = address.split(":")
            if state == "0A" and int(port_hex, 16) == port and inode in inodes:
                return socket.inet_ntoa(bytes.fromhex(host)[::-1])
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} does not listen on port {port}")
        time.sleep(0.02)


@pytest.mark.parametrize("command", ["worker", "scheduler"])
def test_health_host_sets_where_the_health_server_listens(
    spawn: Callable[..., Process], redis_url: str, sqlite_url: str, command: str
) -> None:
    port = free_port()
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url, "WORKER_HEALTH_PORT": str(port)}
    default = spawn(["runtime", command], ROOT, env)
    wait_for_port(port, timeout=30)
    assert listening_address(default.process.pid, port) == "0.0.0.0"  # probes come from outside the pod
    default.stop()
    port = free_port()
    local = spawn(["runtime", command], ROOT, env | {"WORKER_HEALTH_PORT": str(port), "HEALTH_HOST": "127.0.0.1"})
    wait_for_port(port, timeout=30)
    assert listening_address(local.process.pid, port) == "127.0.0.1"


def test_dashboard_listens_on_loopback_outside_production(
    spawn: Callable[..., Process], redis_url: str, sqlite_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url}
    port = free_port()
    development = spawn(["runtime", "dashboard", "--port", str(port)], ROOT, env)
    wait_for_port(port, timeout=30)
    assert listening_address(development.process.pid, port) == "127.0.0.1"
    port = free_port()
    production = spawn(
        ["runtime", "dashboard", "--port", str(port)],
        ROOT,
        env | {"ENV": "production", "DASHBOARD_TOKEN": "a-production-token-0123"},
    )
    wait_for_port(port, timeout=30)
    assert listening_address(production.process.pid, port) == "0.0.0.0"
    port = free_port()
    chosen = spawn(["runtime", "dashboard", "--host", "0.0.0.0", "--port", str(port)], ROOT, env)
    wait_for_port(port, timeout=30)
    assert listening_address(chosen.process.pid, port) == "0.0.0.0"


def test_a_short_dashboard_token_is_refused_in_one_line(
    spawn: Callable[..., Process], redis_url: str, sqlite_url: str
) -> None:
    env = {"REDIS_URL": redis_url, "DATABASE_URL": sqlite_url, "ENV": "production", "DASHBOARD_TOKEN": "short-token"}
    dashboard = spawn(["runtime", "dashboard", "--port", str(free_port())], ROOT, env)
    assert dashboard.wait(30) == 1
    assert dashboard.output.strip() == (
        "error: DASHBOARD_TOKEN is too short (11 characters): use at least 16, e.g. the output of "
        "`openssl rand -hex 32`"
    )


# -- the run store's database --------------------------------------------------------------------------


def test_a_missing_sqlite_folder_is_an_error_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    with pytest.raises(ConfigError) as error:
        RunStore(f"sqlite+aiosqlite:///{missing}/x.db")
    assert str(error.value) == f"DATABASE_URL points into {missing}, which does not exist; create the folder first"
    assert not missing.exists() and not missing.parent.exists()


def test_a_missing_sqlite_folder_stops_a_process_with_one_line(
    spawn: Callable[..., Process], redis_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    worker = spawn(["runtime", "worker"], ROOT, {"REDIS_URL": redis_url, "DATABASE_URL": f"sqlite:///{missing}/x.db"})
    assert worker.wait(30) == 1
    assert (
        worker.output.strip()
        == f"error: DATABASE_URL points into {missing}, which does not exist; create the folder first"
    )
    assert not missing.parent.exists()


@pytest.mark.parametrize(
    "url", ["sqlite://", "sqlite:///:memory:", "sqlite+aiosqlite://", "sqlite:///file:x?mode=memory&uri=true"]
)
def test_an_in_memory_database_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="in-memory database, private to one process"):
        Settings(database_url=url)


# -- the emulator's files ------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_emulator_data_is_private(spawn: Callable[..., Process], tmp_path: Path) -> None:
    from tests.emulator.test_up import make_app, start_emulator

    app = make_app(tmp_path / "app")
    emulator = start_emulator(spawn, app)
    run_id = emulator.enqueue("add", {"a": 1, "b": 2})["id"]
    emulator.wait_run(run_id)
    data = app / ".emulator"
    assert mode(data) == 0o700
    assert mode(data / "redis") == 0o700
    files = [data / "state.json", data / "runs.db", data / "redis" / "redis.log"]
    files += [p for p in data.rglob("*") if p.is_file() and (p.name.startswith("runs.db-") or "appendonly" in p.name)]
    assert any("appendonly" in p.name for p in files) and any(p.name == "runs.db-wal" for p in files), files
    for path in files:
        assert mode(path) == 0o600, f"{path} is {oct(mode(path))}"
    assert emulator.interrupt() == 0


def test_the_emulator_dashboards_own_addresses() -> None:
    from runtime.dashboard.guards import local_addresses

    loopback = {"127.0.0.1:8081", "localhost:8081", "[::1]:8081"}
    assert set(local_addresses("127.0.0.1", 8081)) == loopback
    assert set(local_addresses("0.0.0.0", 8081)) == loopback | {"0.0.0.0:8081"}  # what `emulator up` prints
    assert set(local_addresses("::", 8081)) == loopback | {"[::]:8081"}
    assert set(local_addresses("192.168.1.5", 8081)) == loopback | {"192.168.1.5:8081"}
