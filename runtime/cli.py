"""`runtime`: the production processes and tools. One install; the subcommand picks the process."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from runtime.errors import ConfigError, ManifestError


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _runtime(args: argparse.Namespace) -> Any:
    from runtime.connections import Runtime
    from runtime.logs import configure_logging
    from runtime.settings import get_settings

    settings = get_settings()
    configure_logging(settings)
    return Runtime.from_manifest(args.manifest, settings)


def _on_stop(callback: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, callback)


async def _serve_asgi(runtime: Any, app: Any, host: str, port: int) -> None:
    import uvicorn

    from runtime.server import server_config

    await runtime.start()
    config = server_config(
        app, runtime.settings, host=host, port=port, timeout_graceful_shutdown=int(runtime.settings.shutdown_timeout)
    )
    server = uvicorn.Server(config)
    try:
        await server.serve()
    finally:
        await runtime.stop()


async def _web(args: argparse.Namespace) -> None:
    from runtime.web import create_web_app

    runtime = _runtime(args)
    await _serve_asgi(runtime, create_web_app(runtime), args.host, args.port)


async def _dashboard(args: argparse.Namespace) -> None:
    from runtime.dashboard import create_dashboard_app

    runtime = _runtime(args)
    token = runtime.settings.dashboard_token
    if runtime.settings.env == "production" and not token:
        raise ConfigError("DASHBOARD_TOKEN is required in production: set it to a long random string")
    # outside production (no token needed) it listens on loopback only, unless --host says otherwise
    host = args.host or ("0.0.0.0" if runtime.settings.env == "production" else "127.0.0.1")
    await _serve_asgi(runtime, create_dashboard_app(runtime, token), host, args.port)


async def _start_with_health(runtime: Any) -> None:
    """`runtime.start()`, answering /health with 503 on the health port while it waits."""
    from runtime.health import HealthServer

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


async def _worker(args: argparse.Namespace) -> None:
    from runtime.worker import Worker

    if args.processes < 1:
        raise ConfigError(f"--processes must be 1 or more, not {args.processes}")
    if args.processes > 1:
        await _worker_processes(args)
        return
    runtime = _runtime(args)
    queues = [q.strip() for q in args.queues.split(",") if q.strip()] if args.queues else None
    worker = Worker(runtime, args.concurrency, queues)  # an undeclared queue is an error before connecting
    await _start_with_health(runtime)
    _on_stop(worker.stop)
    try:
        await worker.run(health_port=runtime.settings.worker_health_port or None, host=runtime.settings.health_host)
    finally:
        await runtime.stop()


async def _worker_processes(args: argparse.Namespace) -> None:
    """`--processes N`: a supervisor of N `runtime worker` children (runtime/processes.py)."""
    from runtime.application import load_application
    from runtime.processes import supervise
    from runtime.settings import get_settings

    get_settings()  # a bad setting or manifest is one line now, not a child restarted over and over
    load_application(args.manifest)
    forwarded = ["--manifest", args.manifest]
    forwarded += ["--concurrency", str(args.concurrency)] if args.concurrency is not None else []
    forwarded += ["--queues", args.queues] if args.queues else []
    await supervise(args.processes, forwarded)


async def _scheduler(args: argparse.Namespace) -> None:
    from runtime.scheduler import Scheduler

    runtime = _runtime(args)
    await _start_with_health(runtime)
    scheduler = Scheduler(runtime)
    _on_stop(scheduler.stop)
    try:
        await scheduler.run(health_port=runtime.settings.worker_health_port or None, host=runtime.settings.health_host)
    finally:
        await runtime.stop()


def _check(args: argparse.Namespace) -> int:
    from runtime.application import load_application

    app = load_application(args.manifest)
    print(f"{args.manifest}: app '{app.name}' is valid: {len(app.http)} HTTP function(s), {len(app.tasks)} task(s)")
    print(parity_table(app.manifest))
    return 0


def _db(args: argparse.Namespace) -> int:
    from runtime.migrations import upgrade
    from runtime.redaction import redact
    from runtime.runs import DATABASE_ERRORS, SCHEMA_HEAD, SCHEMA_REVISIONS
    from runtime.settings import get_settings

    url = get_settings().database_url
    try:
        before, after = asyncio.run(upgrade(url))
    except DATABASE_ERRORS as exc:
        raise ConfigError(
            f"cannot upgrade the database at DATABASE_URL={redact(url)}: {str(exc).splitlines()[0]}"
        ) from None
    where = f"the run store at {redact(url)}"
    if before is None:
        print(f"{where}: created at {after}")
    elif after not in SCHEMA_REVISIONS:
        print(f"{where}: at {after}, newer than this runtime's {SCHEMA_HEAD}; left as it is")
    elif before == after:
        print(f"{where}: already at {after}")
    else:
        print(f"{where}: upgraded from {before} to {after}")
    return 0


def parity_table(manifest: Any) -> str:
    """Each function's effective settings: what the emulator, the dashboard and the cluster run."""
    rows = [("function", "kind", "route / schedule", "queue", "retries", "timeout", "concurrency")]
    for row in manifest.summary():
        if row["kind"] == "http":
            rows.append((row["name"], "http", f"{','.join(row['methods'])} {row['route']}", "", "", "", ""))
        else:
            rows.append(
                (
                    row["name"],
                    "task",
                    row["schedule"] or "",
                    row["queue"],
                    str(row["retries"]),
                    row["timeout"],
                    str(row["concurrency"]),
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _schema(args: argparse.Namespace) -> int:
    from runtime.manifest import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return 0


def _k8s(args: argparse.Namespace) -> int:
    from runtime.k8s import k8s_command

    return k8s_command(
        args.manifest,
        args.image,
        args.out,
        keda=args.keda,
        ingress_host=args.ingress_host,
        namespace=args.namespace,
        external_redis=args.external_redis,
        prometheus_operator=args.prometheus_operator,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--manifest", default="manifest.yaml", help="path to manifest.yaml (default: %(default)s)")
        return sub

    web = command("web", "serve the HTTP functions")
    web.add_argument("--host", default="0.0.0.0")
    web.add_argument("--port", type=int, default=8000)
    worker = command("worker", "run tasks from the queue")
    worker.add_argument("--concurrency", type=int, default=None, help="default: the manifest's defaults.concurrency")
    worker.add_argument("--queues", default=None, help="serve only these queues, e.g. critical,default (default: all)")
    worker.add_argument(
        "--processes", type=int, default=1, help="run N worker processes under one supervisor (default: %(default)s)"
    )
    command("scheduler", "enqueue cron functions on time (run exactly one)")
    dashboard = command("dashboard", "serve the dashboard and its JSON API")
    dashboard.add_argument("--host", default=None, help="default: 0.0.0.0 with ENV=production, else 127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8081)
    command("check", "validate the manifest and its handlers; exit 1 listing every error")
    command("schema", "print the manifest's JSON schema (for editors)")
    k8s = command("k8s", "render Kubernetes objects from the manifest")
    k8s.add_argument("--image", required=True, help="the container image, e.g. registry/app:1.0")
    k8s.add_argument("--out", default=None, help="write a kustomize folder here instead of YAML on stdout")
    k8s.add_argument("--namespace", default=None)
    k8s.add_argument("--ingress-host", default=None, help="also render an Ingress for this host")
    k8s.add_argument("--keda", action="store_true", help="autoscale workers with a KEDA ScaledObject")
    k8s.add_argument(
        "--prometheus-operator",
        action="store_true",
        help="also render ServiceMonitors and a dead-letter PrometheusRule (Prometheus Operator CRDs)",
    )
    k8s.add_argument("--external-redis", default=None, help="host:port of a Redis to use instead of rendering one")
    db = commands.add_parser("db", help="manage the run store's schema", description="manage the run store's schema")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    db_upgrade = db_commands.add_parser(
        "upgrade",
        help="bring the run store's schema (DATABASE_URL) up to date",
        description="bring the run store's schema (DATABASE_URL) up to date",
    )
    db_upgrade.add_argument("--manifest", default="manifest.yaml", help="accepted like elsewhere; not needed here")
    return parser


_ASYNC: dict[str, Callable[[argparse.Namespace], Coroutine[Any, Any, None]]] = {
    "web": _web,
    "worker": _worker,
    "scheduler": _scheduler,
    "dashboard": _dashboard,
}
_SYNC: dict[str, Callable[[argparse.Namespace], int]] = {
    "check": _check,
    "schema": _schema,
    "k8s": _k8s,
    "db": _db,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in _SYNC:
            return _SYNC[args.command](args)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(_ASYNC[args.command](args))
    except ManifestError as exc:
        return _fail(str(exc))
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
