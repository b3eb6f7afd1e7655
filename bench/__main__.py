"""`python -m bench`: run every benchmark side by side, print the tables, write BENCHMARKS.md and a chart.

python -m bench                      # the full run: 20,000 tasks, 3 repetitions (minutes)
python -m bench --smoke              # CI: a few hundred tasks, 1 repetition (seconds); writes to a temp dir
python -m bench --only tasks,http --systems ours,taskiq --tasks 2000 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs, report, web
from bench.machine import machine_info
from bench.redis_server import redis_server
from bench.reload import BASELINE_RELOAD, RELOAD_SYSTEMS, reload_run
from bench.startup import emulator_startup
from bench.systems import (
    BASELINE_TASKS,
    BASELINE_WEB,
    OURS,
    PLAIN_VENV,
    TASK_SYSTEMS,
    WEB_SYSTEMS,
    _check_emulator,
    ensure_plain,
    unavailable,
)
from bench.tasks import bulk_enqueue, payload_run, scale_run, throughput_and_latency, worker_startup

PHASES = ["tasks", "flow", "durable", "payloads", "scale", "startup", "http", "enqueue", "store", "reload", "profile"]
PAYLOAD_SYSTEMS = ("ours", "ours-postgres", "taskiq")
SCALE_SYSTEMS = ("ours", "ours-postgres", "taskiq")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--tasks", type=int, default=20_000, help="no-op tasks per throughput run (20000)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions of every measurement, alternating (3)")
    p.add_argument(
        "--ratio-repeat",
        type=int,
        default=5,
        help="repetitions of the flow and durable phases (5): their goals are ratios near 1, which 3 pairs on a "
        "shared machine left to the noise",
    )
    p.add_argument("--latency-samples", type=int, default=200, help="idle-queue latency samples per run (200)")
    p.add_argument("--http-seconds", type=float, default=10, help="wrk duration per run (10)")
    p.add_argument("--edits", type=int, default=20, help="hot-reload edits per run (20)")
    p.add_argument("--sizes", default="1000,100000,1000000", help="payload sizes in bytes (1 KB, 100 KB, 1 MB)")
    p.add_argument("--payload-mb", type=float, default=200, help="MB of arguments per payload run (200)")
    p.add_argument("--processes", default="1,2,4", help="worker processes for the scale-out table (1,2,4)")
    p.add_argument("--store-rows", type=int, default=10_000_000, help="runs in the store for /api/stats (10M)")
    p.add_argument("--only", default=",".join(PHASES), help=f"phases to run, of {','.join(PHASES)}")
    p.add_argument("--systems", default="", help="only these systems, e.g. ours,taskiq (default: all)")
    p.add_argument("--out", type=Path, help="directory for BENCHMARKS.md, chart.png and results.json")
    p.add_argument("--smoke", action="store_true", help="tiny and quick: CI checks the harness still works")
    args = p.parse_args(argv)
    if args.smoke:
        args.tasks, args.repeat, args.latency_samples, args.http_seconds, args.edits = 300, 1, 20, 1, 3
        args.ratio_repeat = 1
        args.payload_mb, args.processes, args.store_rows = 2, "1,2", 2000
        args.out = args.out or Path(tempfile.mkdtemp(prefix="bench-smoke-"))
    return args


class Runner:
    """Runs one measurement, keeping its result or the error; never lets one failure stop the run."""

    def __init__(self) -> None:
        self.failures = 0

    def measure(self, what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            result = fn()
        except Exception as exc:
            self.failures += 1
            message = f"{type(exc).__name__}: {exc}".strip()
            print(f"  {what}: FAILED {message[:600]}", flush=True)
            if not isinstance(exc, RuntimeError | TimeoutError):
                traceback.print_exc()
            return {"error": message[:2000]}
        shown = {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in result.items()
            if k != "body" and not isinstance(v, list)
        }
        print(f"  {what} ({time.monotonic() - started:.1f}s): {shown}", flush=True)
        return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    phases = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(phases) - set(PHASES)
    if unknown:
        print(f"unknown phase(s) {sorted(unknown)}; choose from {PHASES}", file=sys.stderr)
        return 2
    wanted = {s.strip() for s in args.systems.split(",") if s.strip()}

    def chosen(key: str, baseline: str) -> bool:
        return not wanted or key in wanted or key == baseline

    started, t0 = datetime.now(UTC), time.monotonic()
    tmpdir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    runner = Runner()
    results: dict[str, Any] = {}
    print(f"logs in {tmpdir}", flush=True)

    with redis_server() as redis:
        results["machine"] = machine_info(redis.version)
        task_systems = [s for s in TASK_SYSTEMS if chosen(s.key, BASELINE_TASKS)]
        for s in task_systems:
            why = s.unavailable()
            print(f"{s.key}: {'not available: ' + why if why else 'ready'}", flush=True)

        def section(systems: list[Any], baseline: str, label: Callable[[Any], str]) -> dict[str, Any]:
            return {
                "baseline": baseline,
                "systems": {
                    s.key: {
                        "label": label(s),
                        "runs": [],
                        **({"skipped": s.unavailable()} if s.unavailable() else {}),
                    }
                    for s in systems
                },
            }

        if "tasks" in phases:
            print(f"\n== tasks: {args.tasks} no-op tasks + {args.latency_samples} latency samples", flush=True)
            results["tasks"] = section(task_systems, BASELINE_TASKS, lambda s: s.label)
            results["bulk"] = {"runs": [], **({"skipped": OURS.unavailable()} if OURS.unavailable() else {})}
            for rep in range(args.repeat):
                for s in task_systems:
                    if s.unavailable():
                        continue
                    results["tasks"]["systems"][s.key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] {s.key}",
                            lambda s=s, rep=rep: throughput_and_latency(
                                s, redis, args.tasks, args.latency_samples, tmpdir, str(rep)
                            ),
                        )
                    )
                if OURS in task_systems and not OURS.unavailable():
                    bulk = runner.measure(
                        f"[{rep + 1}/{args.repeat}] ours bulk",
                        lambda: bulk_enqueue(OURS, redis, args.tasks, tmpdir),
                    )
                    bulk["single_per_s"] = results["tasks"]["systems"]["ours"]["runs"][-1].get("enqueue_per_s")
                    results["bulk"]["runs"].append(bulk)

        if "flow" in phases and chosen("ours", BASELINE_TASKS):
            from bench import flow

            print(f"\n== flow control: {args.tasks} no-op tasks per worker manifest", flush=True)
            results["flow"] = section(flow.VARIANTS, flow.BASELINE, lambda s: s.label)
            for rep in range(args.ratio_repeat):
                for v in flow.VARIANTS if rep % 2 == 0 else flow.VARIANTS[::-1]:  # drift cancels in the pairs
                    if v.unavailable():
                        continue
                    results["flow"]["systems"][v.key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.ratio_repeat}] {v.key}",
                            lambda v=v, rep=rep: flow.flow_run(v, redis, args.tasks, tmpdir, str(rep)),
                        )
                    )

        if "durable" in phases and chosen("ours", BASELINE_TASKS):
            from bench import durable

            print(
                f"\n== durable functions: {args.tasks} no-op bodies as steps and as tasks;"
                f" {args.latency_samples} sleeps and events",
                flush=True,
            )
            results["durable"] = section(durable.VARIANTS, durable.BASELINE, lambda s: s.label)
            for rep in range(args.ratio_repeat):
                for v in durable.VARIANTS if rep % 2 == 0 else durable.VARIANTS[::-1]:  # drift cancels in the pairs
                    if v.unavailable():
                        continue
                    results["durable"]["systems"][v.key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.ratio_repeat}] {v.key}",
                            lambda v=v, rep=rep: durable.durable_run(
                                v, redis, args.tasks, args.latency_samples, tmpdir, str(rep)
                            ),
                        )
                    )

        if "payloads" in phases:
            sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
            print(f"\n== payloads: tasks with one argument of {sizes} bytes", flush=True)
            systems = [s for s in task_systems if s.key in PAYLOAD_SYSTEMS]
            results["payloads"] = {
                "baseline": BASELINE_TASKS,
                "sizes": {
                    str(size): section(systems, BASELINE_TASKS, lambda s: s.label)
                    | {"n": max(20, min(args.tasks // 4, int(args.payload_mb * 1e6 / size)))}
                    for size in sizes
                },
            }
            for rep in range(args.repeat):
                for size in sizes:
                    entry = results["payloads"]["sizes"][str(size)]
                    for s in systems:
                        if s.unavailable():
                            continue
                        entry["systems"][s.key]["runs"].append(
                            runner.measure(
                                f"[{rep + 1}/{args.repeat}] {s.key} {size:,} B",
                                lambda s=s, size=size, n=entry["n"], rep=rep: payload_run(
                                    s, redis, size, n, tmpdir, str(rep)
                                ),
                            )
                        )

        if "scale" in phases:
            counts = [int(x) for x in args.processes.split(",") if x.strip()]
            print(f"\n== scale-out: {counts} worker processes on one Redis", flush=True)
            systems = [s for s in task_systems if s.key in SCALE_SYSTEMS]
            results["scale"] = {
                "processes": counts,
                "systems": {
                    s.key: {"label": s.label, "runs": {str(n): [] for n in counts}}
                    | ({"skipped": s.unavailable()} if s.unavailable() else {})
                    for s in systems
                },
            }
            for rep in range(args.repeat):
                for n in counts:
                    for s in systems:
                        if s.unavailable():
                            continue
                        results["scale"]["systems"][s.key]["runs"][str(n)].append(
                            runner.measure(
                                f"[{rep + 1}/{args.repeat}] {s.key} x {n}",
                                lambda s=s, n=n, rep=rep: scale_run(s, redis, n, args.tasks, tmpdir, str(rep)),
                            )
                        )

        if "startup" in phases:
            print("\n== start-up: worker spawn -> first pre-queued task; emulator up -> ready", flush=True)
            results["startup"] = section(task_systems, BASELINE_TASKS, lambda s: s.label)
            emulator_why = unavailable(_check_emulator)
            plain_why = emulator_why or ensure_plain()  # `emulator up` as the README installs it (no extras)
            results["emulator"] = {"runs": [], **({"skipped": plain_why} if plain_why else {})}
            results["emulator_dev"] = {"runs": [], **({"skipped": emulator_why} if emulator_why else {})}
            for rep in range(args.repeat):
                for s in task_systems:
                    if s.unavailable():
                        continue
                    results["startup"]["systems"][s.key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] {s.key}",
                            lambda s=s, rep=rep: worker_startup(s, redis, tmpdir, str(rep)),
                        )
                    )
                if not plain_why and chosen("ours", BASELINE_TASKS):
                    results["emulator"]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] emulator up (README install)",
                            lambda rep=rep: emulator_startup(tmpdir, str(rep), bin_dir=PLAIN_VENV / "bin"),
                        )
                    )
                if not emulator_why and chosen("ours", BASELINE_TASKS):
                    results["emulator_dev"]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] emulator up (the bench's venv, with the otel extra)",
                            lambda rep=rep: emulator_startup(tmpdir, f"dev{rep}"),
                        )
                    )

        if "http" in phases:
            print(f"\n== http: wrk -c{web.CONNECTIONS} for {args.http_seconds}s", flush=True)
            web_systems = [s for s in WEB_SYSTEMS if chosen(s.key, BASELINE_WEB)]
            results["http"] = section(web_systems, BASELINE_WEB, lambda s: s.label)
            for rep in range(args.repeat):
                for w in web_systems:
                    if w.unavailable():
                        continue
                    results["http"]["systems"][w.key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] {w.key}",
                            lambda w=w, rep=rep: web.http_run(w, redis, args.http_seconds, tmpdir, str(rep)),
                        )
                    )

        if "enqueue" in phases:
            from bench import enqueue_http

            print(f"\n== enqueue endpoint: POST that enqueues, wrk -c64 for {args.http_seconds}s", flush=True)
            results["enqueue"] = {
                "baseline": enqueue_http.BASELINE,
                "systems": {
                    key: {"label": label, "runs": [], **({"skipped": why} if (why := enqueue_http.check(key)) else {})}
                    for key, label in enqueue_http.ENQUEUE_SYSTEMS
                },
            }
            for rep in range(args.repeat):
                for key, _label in enqueue_http.ENQUEUE_SYSTEMS:
                    if results["enqueue"]["systems"][key].get("skipped"):
                        continue
                    results["enqueue"]["systems"][key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] {key}",
                            lambda key=key, rep=rep: enqueue_http.enqueue_run(
                                key, redis, args.http_seconds, tmpdir, str(rep)
                            ),
                        )
                    )

        if "store" in phases:
            from bench import store

            print(f"\n== run store: /api/stats with {args.store_rows:,} runs", flush=True)
            results["store"] = {"rows": args.store_rows, "backends": {}}
            for backend in ("sqlite", "postgres"):
                why = store.check() if backend == "sqlite" else store.postgres_check()
                results["store"]["backends"][backend] = (
                    {"skipped": why}
                    if why
                    else {
                        "runs": [
                            runner.measure(
                                f"{backend} {args.store_rows:,} runs",
                                lambda backend=backend: store.stats_run(backend, args.store_rows, redis.url, tmpdir),
                            )
                        ]
                    }
                )

        if "reload" in phases:
            print(f"\n== hot reload: {args.edits} edits", flush=True)
            reload_systems = [s for s in RELOAD_SYSTEMS if chosen(s.key, BASELINE_RELOAD)]
            results["reload"] = {
                "baseline": BASELINE_RELOAD,
                "systems": {
                    s.key: {
                        "label": s.label,
                        "runs": [],
                        **({"skipped": unavailable(s.check)} if unavailable(s.check) else {}),
                    }
                    for s in reload_systems
                },
            }
            for rep in range(args.repeat):
                for r in reload_systems:
                    if unavailable(r.check):
                        continue
                    redis.flush()
                    results["reload"]["systems"][r.key]["runs"].append(
                        runner.measure(
                            f"[{rep + 1}/{args.repeat}] {r.key}",
                            lambda r=r, rep=rep: reload_run(r, redis, args.edits, tmpdir, str(rep)),
                        )
                    )

        if "profile" in phases:
            from bench import profile

            print("\n== profiles: py-spy on our processes during the same workloads", flush=True)
            why = profile.available()
            ours_web = next(w for w in WEB_SYSTEMS if w.key == "ours")
            postgres = next(s for s in TASK_SYSTEMS if s.key == "ours-postgres")
            enqueues = max(2000, args.tasks // 4)  # a second or more: py-spy attaches after the first one
            jobs: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
                (
                    "drain-sqlite",
                    f"worker draining {args.tasks:,} no-op tasks, records on SQLite",
                    lambda: profile.drain(OURS, redis, args.tasks, tmpdir),
                ),
                (
                    "drain-postgres",
                    f"worker draining {args.tasks:,} no-op tasks, records on Postgres",
                    lambda: profile.drain(postgres, redis, args.tasks, tmpdir),
                ),
                (
                    "drain-1mb-sqlite",
                    "worker draining 1 MB payloads, records on SQLite",
                    lambda: profile.drain(OURS, redis, max(200, int(args.payload_mb)), tmpdir, size=1_000_000),
                ),
                (
                    "enqueue",
                    f"producer: {enqueues:,} single `await fn.enqueue()` calls (first enqueue to exit)",
                    lambda: profile.enqueue(OURS, redis, enqueues, tmpdir),
                ),
                (
                    "http",
                    f"`runtime web` serving /hello under wrk -c{web.CONNECTIONS}",
                    lambda: profile.http(ours_web, redis, args.http_seconds, tmpdir),
                ),
                (
                    "emulator-up",
                    "`emulator up` spawn -> serving, + 1 s (its forked child included)",
                    lambda: profile.emulator_up(tmpdir),
                ),
                (
                    "startup",
                    "`runtime worker` spawn -> first pre-queued task done",
                    lambda: profile.startup(OURS, redis, tmpdir),
                ),
            ]
            results["profiles"] = {}
            for name, what, job in jobs:
                needs = postgres.unavailable() if "postgres" in name else OURS.unavailable()
                if why or needs:
                    results["profiles"][name] = {"what": what, "skipped": why or needs}
                    continue
                results["profiles"][name] = {"what": what, **runner.measure(f"profile {name}", job)}

    results["conditions"] = {
        "argv": shlex.join(sys.argv[1:] if argv is None else argv),
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "duration_s": time.monotonic() - t0,
        "tasks": args.tasks,
        "repeat": args.repeat,
        "ratio_repeat": args.ratio_repeat,
        "latency_samples": args.latency_samples,
        "http_seconds": args.http_seconds,
        "wrk_threads": web.THREADS,
        "wrk_connections": web.CONNECTIONS,
        "edits": args.edits,
        "systems": [(s.label, s.notes) for s in TASK_SYSTEMS]
        + [
            (
                "bare Starlette on uvicorn",
                "`uvicorn bench.apps.starlette_app:app --no-access-log` (uvloop/httptools when installed)",
            ),
            ("ours (runtime web)", "`runtime web --manifest bench/apps/ours/manifest.yaml`"),
            ("uvicorn --reload", "`uvicorn reload_app:app --reload` (watchfiles)"),
            ("ours (emulator up)", "`emulator up --manifest …` with its default hot reload"),
        ],
    }

    out = args.out
    md_path = (out / "BENCHMARKS.md") if out else procs.REPO / "BENCHMARKS.md"
    chart_path = (out / "chart.png") if out else procs.REPO / "bench" / "chart.png"
    json_path = (out / "results.json") if out else procs.REPO / "bench" / "results" / "results.json"
    for path in (md_path, chart_path, json_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        report.chart(results, chart_path)
        chart_name = (
            str(chart_path.relative_to(md_path.parent))
            if chart_path.is_relative_to(md_path.parent)
            else str(chart_path)
        )
    except Exception as exc:  # the chart is a nicety; the tables are the result
        print(f"chart not drawn: {exc}", file=sys.stderr)
        chart_name = None
    md_path.write_text(report.markdown(results, chart_name))
    json_path.write_text(json.dumps(results, indent=1, default=str))

    print("\n" + report.tables(results) + "\n\n" + report.goals_table(results))
    print(f"\nwrote {md_path}, {chart_path}, {json_path}; logs in {tmpdir}")
    if runner.failures:
        print(f"{runner.failures} measurement(s) failed", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
