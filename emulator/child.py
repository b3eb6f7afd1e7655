"""One generation of the emulator's app: forked from the warm parent, it imports the user's code and
serves the HTTP functions, the dashboard, a worker and the scheduler on the parent's listening sockets.

It tells the parent how it went on a pipe: `ready` once it serves, or `error <json>` when the code or the
manifest is broken (then it serves that error on every route until the next good save).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runtime import gc_pause
from runtime.app.connections import Runtime
from runtime.dashboard.app import create_dashboard_app
from runtime.dashboard.broken import create_broken_dashboard_app
from runtime.dashboard.guards import local_addresses
from runtime.errors import ConfigError, ManifestError
from runtime.scheduler.scheduler import Scheduler
from runtime.settings import Settings
from runtime.store.runs import RunStore
from runtime.web.app import create_web_app
from runtime.web.server import server_config
from runtime.worker.worker import Worker

logger = logging.getLogger("emulator")


SYNC_WARM_AFTER = 1.0  # seconds after start before the sync task processes are started
RETIRE_GRACE = 0.5  # seconds a retiring generation still serves the connections it has already accepted

# What a generation's start imports that importing this module does not (the event loop, anyio's backend, uvicorn's
# protocol choices, the metrics registry): half of a reload's time when each fork imported them again.
STARTUP_IMPORTS = (
    "uvloop",
    "anyio._backends._asyncio",
    "prometheus_client",
    "uvicorn.lifespan.off",
    "uvicorn.protocols.websockets.auto",
)
# And what a generation imports after `ready` (its scheduler's first pass, the dashboard's first query, the first
# task): SQLAlchemy, the SQLModel classes and the engine's driver, not on the way to its first answer. The supervisor
# imports both once the first generation is ready (which imports what it needs itself): while that one starts, the
# supervisor leaves it the machine's other core (~30 ms of `emulator up` on 2 cores).
LATER_IMPORTS = (
    "runtime.store.models",
    "sqlalchemy.ext.asyncio.engine",  # the package itself loads its members lazily (runtime/lazy_imports.py)
    "sqlalchemy.dialects.sqlite.aiosqlite",
    "aiosqlite",
)


def preload(names: tuple[str, ...]) -> None:
    """Import `names` here, in the supervisor, so that every generation forked later has them already and a reload
    imports only the app's own modules."""
    for name in names:
        importlib.import_module(name)


class _Closing:
    """ASGI wrapper: once its generation retires, every response closes its connection, so a keep-alive
    client moves to the next generation instead of racing the close of its idle connection."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.retiring = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if not self.retiring or scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)


class _Server(uvicorn.Server):
    """uvicorn on an inherited socket; signals are ours, not uvicorn's."""

    def __init__(self, config: uvicorn.Config, gate: _Closing) -> None:
        super().__init__(config)
        self.gate = gate

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop_accepting(self) -> None:
        for server in getattr(self, "servers", []):
            server.close()

    def retire(self) -> None:
        """Stop accepting at once (the next generation takes every new connection), but answer what was
        already accepted, whose request uvicorn's shutdown would drop unread, before exiting."""
        self.stop_accepting()
        self.gate.retiring = True

        def exit_now() -> None:
            self.should_exit = True

        asyncio.get_running_loop().call_later(RETIRE_GRACE, exit_now)


class _StartLines(logging.Filter):
    """Notes when the worker and the scheduler have logged their start lines, so the child reports `ready`
    (and the supervisor prints its own `ready` line) only after them; and words their lines "started"
    (they say "ready" as `runtime worker` / `runtime scheduler`), so the first line containing "ready" in
    the emulator's output is the emulator's own."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("scheduler ready:"):
            record.msg = "scheduler started:" + message[len("scheduler ready:") :]
            self.seen.add("scheduler")
        elif message.startswith("worker ") and " ready: " in message:
            record.msg = message.replace(" ready: ", " started: ", 1)
            self.seen.add("worker")
        return True


def _die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies, so no child outlives the emulator."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def error_app(message: str) -> Starlette:
    async def broken(request: Request) -> Response:
        return JSONResponse(
            {"error": "the app failed to load; fix it and save to reload", "detail": message}, status_code=503
        )

    return Starlette(
        routes=[Route("/{path:path}", broken, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])]
    )


def _uvicorn(app: Any, settings: Settings) -> _Server:
    gate = _Closing(app)
    return _Server(server_config(gate, settings, timeout_graceful_shutdown=5), gate)


def app_sources(root: Path) -> list[str]:
    """The app's own Python files this process imported: the ones whose change means a reload."""
    root_text = str(root.resolve())
    sources = []
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.startswith(root_text) and "site-packages" not in path and ".venv" not in path:
            sources.append(path)
    return sorted(sources)


def _report(pipe: int, line: str) -> None:
    """Tell the parent how start-up went (`ready` or `error`). Start-up is over either way: a child forked
    while the parent's collector was paused turns its own back on here, whether or not a worker runs."""
    gc_pause.resume()
    with contextlib.suppress(OSError):
        os.write(pipe, (line + "\n").encode())


async def serve(manifest: Path, settings: Settings, sockets: list[socket.socket], pipe: int) -> int:
    web_socket, dashboard_socket = sockets
    runtime: Runtime | None = None
    try:
        runtime = Runtime.from_manifest(manifest, settings)
        await runtime.start()
    except (ManifestError, ConfigError) as exc:
        return await _serve_error(str(exc), settings, sockets, pipe)

    # no token here: the dashboard answers only to its own address (no DNS rebinding, no cross-site requests)
    web = create_web_app(runtime, debug=True)
    dashboard = create_dashboard_app(
        runtime, allowed_hosts=local_addresses(*dashboard_socket.getsockname()[:2]), web_app=web
    )
    servers = [_uvicorn(web, settings), _uvicorn(dashboard, settings)]
    worker = Worker(runtime)
    # a reloaded generation serves its first requests before its sync processes start competing for the CPU
    # (a sync task sent meanwhile starts a process of its own); saves in quick succession never start them
    worker.warm_after = SYNC_WARM_AFTER
    scheduler = Scheduler(runtime)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.retire()
        worker.stop()
        scheduler.stop()

    loop.add_signal_handler(signal.SIGTERM, stop)

    start_lines = _StartLines()
    for name in ("runtime.worker", "runtime.scheduler"):
        logging.getLogger(name).addFilter(start_lines)

    async def announce() -> None:
        deadline = loop.time() + 10  # the start lines come within milliseconds; never wait on them forever
        while not all(server.started for server in servers) or (
            start_lines.seen != {"worker", "scheduler"} and loop.time() < deadline
        ):
            await asyncio.sleep(0.001)
        _report(pipe, "ready " + json.dumps(app_sources(manifest.parent)))
        if not all(name in sys.modules for name in LATER_IMPORTS):  # the first generation: import them meanwhile,
            loop.run_in_executor(None, preload, LATER_IMPORTS)  # not at its first enqueue or dashboard query

    try:
        await asyncio.gather(
            servers[0].serve(sockets=[web_socket]),
            servers[1].serve(sockets=[dashboard_socket]),
            worker.run(health_port=None),
            scheduler.run(health_port=None),
            announce(),
        )
    finally:
        await runtime.stop()
    return 0


async def _serve_error(message: str, settings: Settings, sockets: list[socket.socket], pipe: int) -> int:
    _report(pipe, "error " + json.dumps(message))
    dashboard_socket = sockets[1]
    # the dashboard stays up, read-only: the error on top, the runs from the run store
    store = RunStore(settings.database_url)
    dashboard = create_broken_dashboard_app(
        store, message, allowed_hosts=local_addresses(*dashboard_socket.getsockname()[:2])
    )
    servers = [_uvicorn(error_app(message), settings), _uvicorn(dashboard, settings)]
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for server in servers:
            server.retire()

    loop.add_signal_handler(signal.SIGTERM, stop)
    try:
        await asyncio.gather(*(server.serve(sockets=[s]) for server, s in zip(servers, sockets, strict=True)))
    finally:
        await store.close()
    return 1


def run_child(manifest: Path, settings: Settings, sockets: list[socket.socket], pipe: int) -> None:
    """The forked child's whole life; never returns."""
    code = 1
    try:
        _die_with_parent()
        for noisy in ("uvicorn.error", "watchfiles"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        import uvloop

        code = uvloop.run(serve(manifest, settings, sockets, pipe))
    except BaseException:
        logger.exception("the emulator's app process crashed")
    finally:
        logging.shutdown()
        os._exit(code)
