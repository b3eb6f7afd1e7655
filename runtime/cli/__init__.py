"""`runtime`: the production processes and tools. One install; the subcommand picks the process."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from runtime import gc_pause
from runtime.errors import ConfigError, ManifestError


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _runtime(args: argparse.Namespace) -> Any:
    from runtime.app.connections import Runtime
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

    from runtime.web.server import server_config

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


async def _worker(args: argparse.Namespace) -> None:
    from runtime.worker.worker import Worker

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
    """`--processes N`: a supervisor of N `runtime worker` children (runtime/worker/processes.py)."""
    from runtime.app.application import load_application
    from runtime.settings import get_settings
    from runtime.worker.processes import supervise

    get_settings()  # a bad setting or manifest is one line now, not a child restarted over and over
    load_application(args.manifest)
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


def _check(args: argparse.Namespace) -> int:
    from runtime.app.application import load_application

    app = load_application(args.manifest)
    print(f"{args.manifest}: app '{app.name}' is valid: {len(app.http)} HTTP function(s), {len(app.tasks)} task(s)")
    print(parity_table(app.manifest))
    return 0


def _db(args: argparse.Namespace) -> int:
    from runtime.redaction import redact
    from runtime.settings import get_settings
    from runtime.store.migrations import upgrade
    from runtime.store.models import DATABASE_ERRORS
    from runtime.store.schema import SCHEMA_HEAD, SCHEMA_REVISIONS

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
    from runtime.app.manifest import manifest_schema

    print(json.dumps(manifest_schema(), indent=2))
    return 0


def _k8s(args: argparse.Namespace) -> int:
    from runtime.deploy.k8s import k8s_command

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


# --- the inspector: `runtime runs ...` and `runtime queues ...` (thin over runtime/ops/operations.py) ----------

PROGRESS_ABOVE = 100  # bulk operations over this many runs draw a progress bar on stderr


def _inspector_settings(manifest: str) -> Any:
    """REDIS_URL / DATABASE_URL when either is set; else those of the `emulator up` running next to the
    manifest (its `.emulator/state.json`); else a ConfigError saying what to set."""
    import os
    from pathlib import Path

    from runtime.settings import Settings, get_settings

    if os.environ.get("REDIS_URL") or os.environ.get("DATABASE_URL"):
        settings = get_settings()
    else:
        path = Path(manifest).resolve().parent / ".emulator" / "state.json"
        fix = "set REDIS_URL and DATABASE_URL to the app's, or run this in the folder where `emulator up` runs"
        try:
            state = json.loads(path.read_text())
            pid, redis_url, database_url = int(state["pid"]), str(state["redis_url"]), str(state["database_url"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(
                f"no app to inspect: REDIS_URL and DATABASE_URL are not set and no emulator runs here; {fix}"
            ) from None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            raise ConfigError(
                f"the emulator of {path.parent.parent} is not running (pid {pid} is gone); {fix}"
            ) from None
        except PermissionError:
            pass  # alive, another user's
        settings = Settings(redis_url=redis_url, database_url=database_url)
    # a command answers within seconds: it does not wait a minute for a dependency to come up
    return settings.model_copy(update={"startup_timeout": min(settings.startup_timeout, 5.0)})


async def _inspect(args: argparse.Namespace) -> int:
    import logging

    from runtime.app.connections import Runtime

    logging.basicConfig(level=logging.ERROR, format="%(message)s")  # progress lines are not for this face
    runtime = Runtime.from_manifest(args.manifest, _inspector_settings(args.manifest))
    await runtime.start()
    try:
        return int(await INSPECTOR[args.inspector](runtime, args))
    finally:
        await runtime.stop()


def _print_json(value: Any) -> None:
    from runtime.redaction import redact

    print(redact(json.dumps(value, indent=2, default=str)))


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else ""


def _one_line(text: str | None, width: int = 60) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _since(value: str | None) -> float | None:
    from runtime.app.manifest import MAX_KEEP, parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value, maximum=MAX_KEEP)
    except ValueError as exc:
        raise ValueError(f"--since: {exc}") from None


def _progress(total_label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if total <= PROGRESS_ABOVE:
            return
        filled = int(30 * done / total)
        end = "\n" if done >= total else ""
        print(f"\r{total_label} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}", end=end, file=sys.stderr)
        sys.stderr.flush()

    return show


def _report_errors(errors: dict[str, str]) -> int:
    for reason in errors.values():
        print(f"error: {reason}", file=sys.stderr)
    return 1 if errors else 0


async def _runs_list(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations

    runs = await operations.list_runs(
        runtime,
        function=args.function,
        status=args.status,
        queue=args.queue,
        limit=args.limit,
        search=args.search,
    )
    if args.json:
        _print_json([run.public() for run in runs])
        return 0
    if not runs:
        print("no runs")
        return 0
    from runtime.redaction import redact

    rows: list[tuple[str, ...]] = [("id", "function", "queue", "status", "attempts", "enqueued (UTC)", "error")]
    for run in runs:
        attempts = f"{run.attempts}/{run.max_attempts}"
        rows.append(
            (run.id, run.function, run.queue, run.status, attempts, _when(run.enqueued_at), _one_line(run.last_error))
        )
    print(redact(_table(rows)))
    return 0


async def _runs_show(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations
    from runtime.redaction import redact

    run = await operations.show_run(runtime, args.id)
    if args.json:
        _print_json(run.public())
        return 0
    lines = [
        f"run        {run.id}",
        f"function   {run.function} (queue {run.queue})",
        f"status     {run.status}, {run.attempts} of at most {run.max_attempts} attempt(s)",
        f"enqueued   {_when(run.enqueued_at)}",
    ]
    for label, value in (
        ("scheduled", run.scheduled_for),
        ("started", run.started_at),
        ("finished", run.finished_at),
        ("deadline", run.deadline),
    ):
        if value is not None:
            lines.append(f"{label:<10} {_when(value)}")
    for label, text in (("replay of", run.replay_of), ("key", run.idempotency_key), ("trace", run.trace_id)):
        if text:
            lines.append(f"{label:<10} {text}")
    lines.append(f"arguments  {json.dumps(run.arguments, default=str)}")
    for entry in run.history:
        took = entry.get("duration_ms")
        took_text = f" ({took:.0f} ms)" if isinstance(took, int | float) else ""
        error = entry.get("error")
        lines.append(f"attempt {entry.get('attempt', '?')}{took_text}: {'error: ' + str(error) if error else 'ok'}")
        trace = entry.get("traceback")
        if trace:
            lines += ["    " + line for line in str(trace).rstrip().splitlines()]
    if run.status == "succeeded" or run.result is not None:
        lines.append(f"result     {json.dumps(run.result, default=str)}")
    elif run.last_error:
        lines.append(f"error      {run.last_error}")
    print(redact("\n".join(lines)))
    return 0


def _selection(args: argparse.Namespace) -> tuple[list[str] | None, Any]:
    from runtime.ops.operations import RunFilter

    if args.ids and args.failed:
        raise ValueError("give run ids or --failed, not both")
    if not args.ids and not args.failed:
        raise ValueError("give run ids, or --failed [--function F] [--since 1h] for every failed run")
    if args.ids:
        if args.function or args.since:
            raise ValueError("--function and --since go with --failed, not with run ids")
        return list(args.ids), None
    return None, RunFilter(status="failed", function=args.function, since=_since(args.since))


async def _runs_replay(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations

    ids, where = _selection(args)
    outcome = await operations.replay(runtime, ids, where, progress=_progress("replaying"))
    if args.json:
        _print_json({"count": outcome.count, "ids": [r.id for r in outcome.runs], "errors": outcome.errors})
    else:
        if len(outcome.runs) <= 20:
            for run in outcome.runs:
                print(f"run {run.replay_of} replayed as {run.id}")
        print(f"replayed {outcome.count} run(s)")
    return _report_errors(outcome.errors)


async def _runs_delete(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations

    ids, where = _selection(args)
    outcome = await operations.delete(runtime, ids, where, progress=_progress("deleting"))
    if args.json:
        _print_json({"count": outcome.count, "errors": outcome.errors})
    else:
        print(f"deleted {outcome.count} run(s)")
    return _report_errors(outcome.errors)


async def _runs_cancel(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations

    outcome = await operations.cancel(runtime, args.ids)
    if args.json:
        _print_json({"count": outcome.count, "runs": [r.public() for r in outcome.runs], "errors": outcome.errors})
    else:
        for run in outcome.runs:
            print(f"run {run.id} {run.status}")
    return _report_errors(outcome.errors)


async def _queues_list(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations

    stats = await operations.queue_stats(runtime)
    if args.json:
        _print_json(stats)
        return 0
    header = ("queue", "waiting", "running", "scheduled", "retrying", "dead", "paused", "succeeded 1h", "failed 1h")
    rows: list[tuple[str, ...]] = [header]
    for name, row in stats.items():
        counts = [str(row[k]) for k in ("waiting", "running", "scheduled", "retrying", "dead")]
        finished = [str(row["succeeded_last_hour"]), str(row["failed_last_hour"])]
        rows.append((name, *counts, "yes" if row["paused"] else "no", *finished))
    print(_table(rows))
    return 0


async def _queues_pause(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.ops import operations

    if args.inspector == "queues pause":
        await operations.pause(runtime, args.name)
        message = f"paused queue {args.name}: it still accepts runs; workers take none until it is resumed"
    else:
        await operations.resume(runtime, args.name)
        message = f"resumed queue {args.name}"
    if args.json:
        _print_json({"queue": args.name, "paused": args.inspector == "queues pause"})
    else:
        print(message)
    return 0


INSPECTOR: dict[str, Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "runs": _runs_list,
    "runs show": _runs_show,
    "runs replay": _runs_replay,
    "runs delete": _runs_delete,
    "runs cancel": _runs_cancel,
    "queues": _queues_list,
    "queues pause": _queues_pause,
    "queues resume": _queues_pause,
}


def _inspector_commands(commands: Any) -> None:
    """`runtime runs ...` and `runtime queues ...`."""

    def common(sub: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
        sub.add_argument("--manifest", default="manifest.yaml", help="path to manifest.yaml (default: %(default)s)")
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(inspector=name)
        return sub

    where = "REDIS_URL/DATABASE_URL, or the `emulator up` running here"
    runs = common(
        commands.add_parser("runs", help="list and manage runs", description=f"runs, newest first ({where})"), "runs"
    )
    runs.add_argument("--function", default=None)
    runs.add_argument("--status", default=None, help="scheduled, queued, running, retrying, succeeded, failed, ...")
    runs.add_argument("--queue", default=None)
    runs.add_argument("--search", default=None, help="a run id prefix, or text in the arguments")
    runs.add_argument("--limit", type=int, default=50, help="default: %(default)s")
    run_commands = runs.add_subparsers(dest="runs_command", metavar="COMMAND")
    show = common(
        run_commands.add_parser("show", help="one run: arguments, attempts with tracebacks, result"), "runs show"
    )
    show.add_argument("id")
    for name, text in (
        ("replay", "queue failed runs again (new runs)"),
        ("delete", "forget runs and their dead letters"),
    ):
        bulk = common(run_commands.add_parser(name, help=text, description=text), f"runs {name}")
        bulk.add_argument("ids", nargs="*", metavar="ID")
        bulk.add_argument("--failed", action="store_true", help="every failed run (still dead-lettered, for replay)")
        bulk.add_argument("--function", default=None, help="with --failed: only this function's")
        bulk.add_argument("--since", default=None, help="with --failed: only those that failed within, e.g. 1h")
    cancel = common(run_commands.add_parser("cancel", help="cancel runs"), "runs cancel")
    cancel.add_argument("ids", nargs="+", metavar="ID")
    queues = common(commands.add_parser("queues", help="queue depths; pause and resume queues"), "queues")
    queue_commands = queues.add_subparsers(dest="queues_command", metavar="COMMAND")
    for name, text in (
        ("pause", "stop workers taking from a queue (it still accepts runs)"),
        ("resume", "resume a queue"),
    ):
        common(queue_commands.add_parser(name, help=text, description=text), f"queues {name}").add_argument("name")


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
        if args.command in ("runs", "queues"):
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

    from runtime.store.models import DATABASE_ERRORS

    try:
        return asyncio.run(_inspect(args))
    except LookupError as exc:
        return _fail(str(exc.args[0]) if exc.args else str(exc))
    except (ValueError, NotImplementedError) as exc:
        return _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except (RedisError, *DATABASE_ERRORS) as exc:
        from runtime.redaction import redact

        return _fail(redact(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"))
