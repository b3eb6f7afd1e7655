"""The long-running processes of `runtime`: web, worker (one, or N under a supervisor), scheduler and dashboard.
Each imports what it runs only when it starts, after main() has paused the collector (runtime/gc_pause.py)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable
from typing import Any

from runtime.errors import ConfigError


def _settings(args: argparse.Namespace) -> tuple[Any, str]:
    """The process's settings (runtime/cli/discovery.py), its logging set up, and the line it logs once it has
    connected: which Redis and which database it uses, and why those."""
    from runtime.cli.discovery import command_settings
    from runtime.logs import configure_logging
    from runtime.redaction import redact

    settings, source = command_settings(args.manifest, need_app=False)
    configure_logging(settings)
    uses = f"{args.command} uses redis {redact(settings.redis_url)} and database {redact(settings.database_url)}"
    return settings, f"{uses} ({source})"


def _runtime(args: argparse.Namespace) -> Any:
    from runtime.app.connections import Runtime

    settings, origin = _settings(args)
    runtime = Runtime.from_manifest(args.manifest, settings)
    runtime.origin = origin  # logged once connected: a process that cannot start says only why, in one line
    return runtime


def _on_stop(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def _serve_asgi(runtime: Any, app: Any, host: str, port: int) -> None:
    from runtime.web.server import Server, server_config

    await runtime.start()
    config = server_config(
        app, runtime.settings, host=host, port=port, timeout_graceful_shutdown=int(runtime.settings.shutdown_timeout)
    )
    server = Server(config)
    try:
        await server.serve()
    finally:
        await runtime.stop()


async def _web(args: argparse.Namespace) -> None:
    from runtime.web.app import create_web_app

    runtime = _runtime(args)
    await _serve_asgi(runtime, create_web_app(runtime), args.host, args.port)


async def _dashboard(args: argparse.Namespace) -> None:
    from runtime.dashboard.app import create_dashboard_app

    runtime = _runtime(args)
    token = runtime.settings.dashboard_token
    if runtime.settings.env == "production" and not token:
        raise ConfigError("DASHBOARD_TOKEN is required in production: set it to a long random string")
    # outside production (no token needed) it listens on loopback only, unless --host says otherwise
    host = args.host or ("0.0.0.0" if runtime.settings.env == "production" else "127.0.0.1")
    await _serve_asgi(runtime, create_dashboard_app(runtime, token), host, args.port)


async def _start_with_health(runtime: Any) -> None:
    """`runtime.start()`, answering /health with 503 on the health port while it waits."""
    from runtime.ops.health import HealthServer

    async def starting() -> tuple[int, dict[str, Any]]:
        return 503, {"status": "starting", **runtime.waiting}

    async def alive() -> tuple[int, dict[str, Any]]:  # waiting is not stuck: no restart by the liveness probe
        return 200, {"status": "starting"}

    port = runtime.settings.worker_health_port
    health = HealthServer(starting, alive) if port else None
    if health is not None:
        await health.start(runtime.settings.health_host, port)
    try:
        await runtime.start()
    finally:
        if health is not None:
            await health.stop()


def _queues(args: argparse.Namespace) -> list[str] | None:
    return [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None


async def _worker(args: argparse.Namespace) -> None:
    from runtime.worker.worker import Worker

    if args.processes < 1:
        raise ConfigError(f"--processes must be 1 or more, not {args.processes}")
    if args.processes > 1:
        await _worker_processes(args)
        return
    runtime = _runtime(args)
    worker = Worker(runtime, args.concurrency, _queues(args))  # an undeclared queue is an error before connecting
    await _start_with_health(runtime)
    _on_stop(worker.stop)
    try:
        await worker.run(health_port=runtime.settings.worker_health_port or None, host=runtime.settings.health_host)
    finally:
        await runtime.stop()


async def _worker_processes(args: argparse.Namespace) -> None:
    """`--processes N`: a supervisor of N `runtime worker` children (runtime/worker/processes.py)."""
    from runtime.app.application import load_application
    from runtime.cli.discovery import command_settings
    from runtime.queue.priority import served_queues
    from runtime.worker.processes import supervise

    # a bad setting, manifest or --queues is one line now, not a child restarted over and over
    command_settings(args.manifest, need_app=False)
    served_queues(load_application(args.manifest).manifest, _queues(args))
    forwarded = ["--manifest", args.manifest]
    forwarded += ["--concurrency", str(args.concurrency)] if args.concurrency is not None else []
    forwarded += ["--queues", args.queues] if args.queues else []
    await supervise(args.processes, forwarded)


async def _scheduler(args: argparse.Namespace) -> None:
    from runtime.scheduler.scheduler import Scheduler

    runtime = _runtime(args)
    await _start_with_health(runtime)
    scheduler = Scheduler(runtime)
    _on_stop(scheduler.stop)
    try:
        await scheduler.run(health_port=runtime.settings.worker_health_port or None, host=runtime.settings.health_host)
    finally:
        await runtime.stop()
