"""`runtime`: the production processes and tools. One install; the subcommand picks the process."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from runtime import gc_pause
from runtime.cli.inspector import _inspect, _inspector_commands
from runtime.cli.parser import Parser, port, positive
from runtime.cli.processes import _dashboard, _scheduler, _web, _worker
from runtime.cli.tools import _check, _db, _k8s, _schema
from runtime.errors import ConfigError, ManifestError


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="runtime", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--manifest", default="manifest.yaml", help="path to manifest.yaml (default: %(default)s)")
        return sub

    web = command("web", "serve the HTTP functions")
    web.add_argument("--host", default="0.0.0.0")
    web.add_argument("--port", type=port, default=8000)
    worker = command("worker", "run tasks from the queue")
    worker.add_argument(
        "--concurrency", type=positive, default=None, help="default: the manifest's defaults.concurrency"
    )
    worker.add_argument("--queues", default=None, help="serve only these queues, e.g. critical,default (default: all)")
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run N worker processes under one supervisor (default: %(default)s)",
    )
    command("scheduler", "enqueue cron functions on time (run exactly one)")
    dashboard = command("dashboard", "serve the dashboard and its JSON API")
    dashboard.add_argument("--host", default=None, help="default: 0.0.0.0 with ENV=production, else 127.0.0.1")
    dashboard.add_argument("--port", type=port, default=8081)
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
    _inspector_commands(commands)
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


async def _resuming_gc(command: Coroutine[Any, Any, None]) -> None:
    """Run a long-running command; the collector is back on once it is ready (Worker.run says so) or
    after gc_pause.GRACE seconds."""
    asyncio.get_running_loop().call_later(gc_pause.GRACE, gc_pause.resume)
    await command


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in ("runs", "queues", "events", "limits"):
            return _run_inspector(args)
        if args.command in _SYNC:
            return _SYNC[args.command](args)
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        gc_pause.pause()
        asyncio.run(_resuming_gc(_ASYNC[args.command](args)))
    except ManifestError as exc:
        return _fail(str(exc))
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    return 0


def _run_inspector(args: argparse.Namespace) -> int:
    """An inspector command: its answer on stdout; any error as one line on stderr, exit 1."""
    from redis.exceptions import RedisError

    from runtime.store.values import database_errors

    unavailable: tuple[type[BaseException], ...] = (RedisError, *database_errors())
    try:
        return asyncio.run(_inspect(args))
    except BrokenPipeError:  # `runtime runs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's flush at exit must not fail
        return 0
    except LookupError as exc:
        return _fail(str(exc.args[0]) if exc.args else str(exc))
    except (ValueError, NotImplementedError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except unavailable as exc:
        from runtime.redaction import redact

        return _fail(redact(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
