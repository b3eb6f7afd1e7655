"""The inspector: `runtime runs ...` and `runtime queues ...`, their arguments, the settings they connect with, and
how they print (thin over runtime/ops/operations.py)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from runtime.cli.events import EVENT_COMMANDS, add_event_commands
from runtime.errors import ConfigError

PROGRESS_ABOVE = 100  # bulk operations over this many runs draw a progress bar on stderr


def _inspector_settings(manifest: str) -> Any:
    """REDIS_URL / DATABASE_URL when either is set; else those of the `emulator up` running next to the
    manifest; else a ConfigError saying what to set (runtime/cli/discovery.py)."""
    from runtime.cli.discovery import command_settings

    settings, _ = command_settings(manifest, need_app=True)
    # a command answers within seconds: it does not wait a minute for a dependency to come up
    return settings.model_copy(update={"startup_timeout": min(settings.startup_timeout, 5.0)})


async def _inspect(args: argparse.Namespace) -> int:
    import logging

    from runtime.app.application import load_application, load_declarations
    from runtime.app.connections import Runtime
    from runtime.errors import ManifestError

    logging.basicConfig(level=logging.ERROR, format="%(message)s")  # progress lines are not for this face
    settings = _inspector_settings(args.manifest)
    if args.inspector in ("runs replay", "events send"):  # they check arguments against the functions: import them
        try:
            app = load_application(args.manifest)
        except ManifestError as exc:
            first = str(exc).splitlines()[-1 if len(exc.problems) == 1 else 1].strip().removeprefix("- ")
            what = "replay" if args.inspector == "runs replay" else "send events"
            raise ConfigError(f"cannot {what} while the app fails to load ({first}); fix it and {what}") from None
    else:  # Redis and the database are enough: these work while the app's code is broken
        app = load_declarations(args.manifest)
    runtime = Runtime(app, settings)
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


def _took(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 10_000 else f"{ms / 1000:.1f} s"


def _one_line(text: str | None, width: int = 60) -> str:
    line = (text or "").strip().splitlines()[0] if (text or "").strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _since(value: str | None) -> float | None:
    from runtime.app.durations import parse_duration
    from runtime.app.manifest import MAX_KEEP

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
    from runtime.store.values import from_timestamp

    run = await operations.show_run(runtime, args.id)
    steps = await runtime.store.steps.of_run(run.id)
    if args.json:
        _print_json(run.public() | {"steps": steps})
        return 0
    lines = [
        f"run        {run.id}",
        f"function   {run.function} (queue {run.queue})",
        f"status     {run.status}, {run.attempts} of at most {run.max_attempts} attempt(s)",
        f"enqueued   {_when(run.enqueued_at)} (UTC)",
    ]
    for label, value in (
        ("scheduled", run.scheduled_for),
        ("started", run.started_at),
        ("finished", run.finished_at),
        ("deadline", run.deadline),
    ):
        if value is not None:
            lines.append(f"{label:<10} {_when(value)}")
    for label, ms in (("duration", run.duration_ms()), ("in attempts", run.time_in_attempts_ms())):
        if ms is not None:
            lines.append(f"{label:<10} {_took(ms)}")
    for label, text in (("replay of", run.replay_of), ("key", run.idempotency_key), ("trace", run.trace_id)):
        if text:
            lines.append(f"{label:<10} {text}")
    lines.append(f"arguments  {json.dumps(run.arguments, default=str)}")
    for entry in run.history:
        took = entry.get("duration_ms")
        took_text = f" ({_took(took)})" if isinstance(took, int | float) else ""
        error = entry.get("error")
        waited = entry.get("waited_for")
        ended = f"error: {error}" if error else f"then waited for {waited}" if waited else "ok"
        if entry.get("error_type") == "RetryAfter" and str(error).startswith("retry after"):
            ended = f"asked to {error}"  # honoured: the run went on at this attempt
        lines.append(f"attempt {entry.get('attempt', '?')}{took_text}: {ended}")
        started = entry.get("started_at")
        when = f"started {_when(from_timestamp(started))}" if isinstance(started, int | float) else ""
        worker = f"on {entry['worker']} ({entry.get('host')}, pid {entry.get('pid')})" if entry.get("worker") else ""
        if when or worker:
            lines.append(f"    {' '.join(part for part in (when, worker) if part)}")
        trace = entry.get("traceback")
        if trace:
            lines += ["    " + line for line in str(trace).rstrip().splitlines()]
    if run.waiting_for:
        lines.append(f"waiting    for {run.waiting_for}")
    for step in steps:
        outcome = json.dumps(step["result"], default=str)
        if step["status"] == "failed":
            outcome = f"error: {step['error']}"
        elif step["status"] in ("sleep", "wait"):  # a sleep's or a wait's finished_at is when it ends at the latest
            outcome = f"until {step['finished_at']}"
        took = f"{step['attempts']} attempt(s), {step['duration_ms']:.0f} ms"
        lines.append(f"step {step['name']:<20} {step['status']:<9} {took}: {_one_line(outcome)}")
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
    finals = ("succeeded", "failed", "cancelled")
    rows: list[tuple[str, ...]] = [("queue", *operations.QUEUE_STATES, "paused", *(f"{s} 1h" for s in finals))]
    for name, row in stats.items():
        counts = [str(row[state]) for state in operations.QUEUE_STATES]
        finished = [str(row[f"{status}_last_hour"]) for status in finals]
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


async def _limits(runtime: Any, args: argparse.Namespace) -> int:
    from runtime.flow.state import limits_now

    rows = await limits_now(runtime)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no function declares a limit (concurrency, limits, throttle, rate_limit, debounce, batch)")
        return 0
    table: list[tuple[str, ...]] = [
        ("function", "limit", "key", "running", "waiting", "throttled", "skipped", "debounced", "batched")
    ]
    for row in rows:
        running = f"{row['running']}/{row['max']}" if row["max"] is not None else "-"
        counts = [str(row[field]) for field in ("waiting", "throttled", "skipped", "debounced", "batched")]
        table.append((row["function"], row["limit"], row["key"] or "-", running, *counts))
    print(_table(table))
    return 0


INSPECTOR: dict[str, Callable[[Any, argparse.Namespace], Coroutine[Any, Any, int]]] = {
    "runs": _runs_list,
    "runs show": _runs_show,
    "runs replay": _runs_replay,
    "runs delete": _runs_delete,
    "runs cancel": _runs_cancel,
    **EVENT_COMMANDS,
    "queues": _queues_list,
    "queues pause": _queues_pause,
    "queues resume": _queues_pause,
    "limits": _limits,
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
    statuses = "scheduled, queued, running, retrying, waiting, succeeded, failed, cancelled or skipped"
    runs.add_argument("--status", default=None, help=statuses)
    runs.add_argument("--queue", default=None)
    runs.add_argument("--search", default=None, help="a run id's start or end (the short id), or argument text")
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
    common(
        commands.add_parser(
            "limits",
            help="flow control now: per function, limit and key, running/limit, waiting, throttled, skipped",
        ),
        "limits",
    )
    add_event_commands(commands, common)
