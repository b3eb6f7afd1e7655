# ruff: noqa: RUF001, RUF002
"""Durable functions' price (issue 23), in one run of one `runtime worker` on bench/apps/ours/durable.yaml.

- **Steps against tasks, the same work.** The unit of work is one no-op body: `probe.record_done()` (one Lua
  call, as every benchmarked task makes). `steps` runs do it in 10 steps each (`ctx.step.run`, every step saved
  in the run store before the next), plain `unit` tasks once each; N runs of `steps` against 10·N `unit` runs
  is the same 10·N bodies. Throughput is bodies per second, from the bodies' own stamps (first to last), and
  the ratio is steps' ÷ tasks' (goal ≥ 1.0×). A `steps` run also INCRs a counter after its last step (so the
  harness sees every run finish): one Redis call per 10 bodies that the tasks don't make. Both are pre-filled
  in bulk (the fill is not measured) into a fresh run store; the two alternate within each repetition, in
  reverse order every other one, and the ratio pairs the runs of one repetition.
- **Sleep resume lateness.** On the steps worker, idle after its drain: M `sleeper` runs, each given the time
  it is to wake (1.5 s after the enqueue and on, 10–40 ms apart, so each meets an idle worker). Each runs
  once, saves its sleep step and suspends (`ctx.sleep_until`, the code path of `ctx.sleep`); when it resumes it
  pushes `time.time() − planned wake time` to Redis itself. p50 and p99 (goal p99 ≤ 50 ms).
- **Event → woken run.** Then K `waiter` runs wait (`ctx.wait_for_event`, matched on their argument `i`);
  once all K are registered, the producer sends `bench.go` events one at a time with `sent_at = time.time()`
  in the data, taken just before `send_event`; the woken run pushes its own `time.time() − sent_at` after the
  wait returns. The next event goes 5–25 ms after that stamp is seen (an idle worker). p50 and p99 (goal p99
  ≤ 20 ms).
- **A task that uses no step pays nothing.** Not measured here: the tasks phase's no-op task is such a task,
  and `ctx.step` reads the run store only when a step is first asked for (runtime/durable/steps.py).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.flow import _commands
from bench.redis_server import RedisServer
from bench.stats import median, paired_ratio, percentile
from bench.systems import OURS, OURS_DIR, VENV_BIN, TaskSystem
from bench.tasks import _drain, _producer, _run_dir

STEPS = 10  # steps per durable run (bench/apps/ours/durable_functions.py)
RUNS = "durable:runs"
SLEEP_LATE = "durable:sleep_late"
EVENT_LATENCY = "durable:event_latency"
BASELINE = "tasks"
THROUGHPUT_GOAL = 1.0
SLEEP_P99_MS = 50.0
EVENT_P99_MS = 20.0
MANIFEST = OURS_DIR / "durable.yaml"


@dataclass
class DurableVariant(TaskSystem):
    mode: str = "units"  # the producer's mode: what is enqueued
    per_run: int = 1  # bodies per run


def _variant(key: str, label: str, mode: str, per_run: int) -> DurableVariant:
    return DurableVariant(
        key=key,
        label=label,
        module="bench.apps.durable_app",
        worker=lambda mode: [str(VENV_BIN / "runtime"), "worker", "--manifest", str(MANIFEST)],
        cwd=OURS_DIR,
        check=OURS.check,
        records=True,
        bulk=True,
        mode=mode,
        per_run=per_run,
    )


VARIANTS = [
    _variant("steps", f"N durable runs of {STEPS} no-op steps", "steps", STEPS),
    _variant(BASELINE, f"{STEPS}·N plain no-op tasks", "units", 1),
]


def _latencies(redis: RedisServer, key: str, prefix: str) -> dict[str, Any]:
    """Percentiles of the stamps' second figure (past the sleep or wait), and the median of the first (the
    resumed execution's first line): how much of the delay comes before the function's code runs again."""
    with redis.client() as c:
        pairs = [[float(x) * 1000 for x in line.split()] for line in c.lrange(key, 0, -1)]
    if not pairs:
        return {f"{prefix}_n": 0}
    past = [b for _, b in pairs]
    return {
        f"{prefix}_n": len(pairs),
        f"{prefix}_p50_ms": percentile(past, 50),
        f"{prefix}_p99_ms": percentile(past, 99),
        f"{prefix}_max_ms": max(past),
        f"{prefix}_start_p50_ms": percentile([a for a, _ in pairs], 50),
    }


def durable_run(
    variant: DurableVariant, redis: RedisServer, units: int, samples: int, tmpdir: Path, tag: str
) -> dict[str, Any]:
    """One drain of `units` pre-filled bodies (units ÷ per_run runs) by a fresh worker: bodies/s, Redis commands
    per body; for the steps variant, the runs finished and steps saved, then (its worker idle) `samples` sleeps
    and `samples` event waits."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "durable", variant)
    runs = max(1, units // variant.per_run)
    units = runs * variant.per_run
    _producer(variant, variant.mode, runs, redis, tmpdir)
    before = _commands(redis)

    def then(result: dict[str, Any]) -> None:
        calls = {k: v - before.get(k, 0) for k, v in _commands(redis).items()}
        calls.pop("info", None)  # the harness's own
        result["redis_commands_per_unit"] = sum(calls.values()) / units
        if variant.per_run == 1:
            return
        _until_runs(redis, runs)
        result["runs_done"] = runs
        result["steps_saved"] = _steps_saved(tmpdir)
        if samples:
            _producer(variant, "waits", samples, redis, tmpdir)
            result |= _latencies(redis, SLEEP_LATE, "sleep") | _latencies(redis, EVENT_LATENCY, "event")

    result = _drain(variant, variant.worker("throughput"), redis, units, tmpdir, f"durable-{variant.key}-{tag}", then)
    result["units_per_s"] = result.pop("tasks_per_s")
    result["redis_cpu_us_per_unit"] = result.pop("redis_cpu_us_per_task")
    return {"runs": runs, "units": units, **result}


def _until_runs(redis: RedisServer, runs: int, timeout: float = 30.0) -> None:
    """Every run's own INCR after its last step (it comes just after that step's stamp)."""
    deadline = time.monotonic() + timeout
    with redis.client() as c:
        while int(c.get(RUNS) or 0) < runs:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {int(c.get(RUNS) or 0)}/{runs} durable runs finished their steps")
            time.sleep(0.01)


def _steps_saved(tmpdir: Path) -> int | None:
    """Rows in the run store's steps table (the worker's SQLite file)."""
    path = tmpdir / "runs.db"
    if not path.exists():
        return None
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM steps").fetchone()[0])


def _runs(results: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entry = results["durable"]["systems"].get(key, {})
    return [] if entry.get("skipped") else entry.get("runs", [])


def ratio(results: dict[str, Any]) -> float | None:
    """Paired bodies/s of the durable runs against the plain tasks' of the same repetition."""
    return paired_ratio(
        [r.get("units_per_s") for r in _runs(results, "steps")],
        [r.get("units_per_s") for r in _runs(results, BASELINE)],
    )


def _fmt(value: float | None, digits: int, suffix: str = "") -> str:
    return "–" if value is None else f"{value:,.{digits}f}{suffix}"


def _failed(runs: list[dict[str, Any]]) -> str:
    errors = [r["error"] for r in runs if "error" in r]
    return f" ({len(errors)} of {len(runs)} runs failed: {errors[0][:160]})" if errors else ""


HEADER = [
    "workload (the same no-op bodies)",
    "bodies/s",
    "Redis CPU per body",
    "Redis commands per body",
    "steps saved",
    "× plain tasks",
]


def rows(results: dict[str, Any]) -> list[list[str]]:
    """The throughput table's rows: the durable runs and the plain tasks."""
    out = []
    for key, entry in results["durable"]["systems"].items():
        if entry.get("skipped"):
            out.append([entry["label"], f"not available: {entry['skipped']}", "", "", "", ""])
            continue
        runs = entry["runs"]
        r = ratio(results)
        saved = median(r.get("steps_saved") for r in runs)
        out.append(
            [
                entry["label"] + _failed(runs),
                _fmt(median(r.get("units_per_s") for r in runs), 0),
                _fmt(median(r.get("redis_cpu_us_per_unit") for r in runs), 1, " µs"),
                _fmt(median(r.get("redis_commands_per_unit") for r in runs), 2),
                "" if key == BASELINE else _fmt(saved, 0),
                "1.00× (baseline)" if key == BASELINE else ("–" if r is None else f"{r:.2f}×"),
            ]
        )
    return out


LATENCY_HEADER = [
    "on the idle steps worker",
    "samples per run",
    "p50",
    "p99",
    "max",
    "p50 to the resumed execution's first line",
    "goal",
]


def latency_rows(results: dict[str, Any]) -> list[list[str]]:
    """Sleep lateness and event → resume, medians over the repetitions of each run's percentiles."""
    runs = _runs(results, "steps")
    out = []
    for prefix, what, goal in (
        ("sleep", "sleep resume lateness (resumed − planned wake time)", f"p99 ≤ {SLEEP_P99_MS:g} ms"),
        ("event", "event sent → woken run past its wait", f"p99 ≤ {EVENT_P99_MS:g} ms"),
    ):
        out.append(
            [
                what,
                _fmt(median(r.get(f"{prefix}_n") for r in runs), 0),
                _fmt(median(r.get(f"{prefix}_p50_ms") for r in runs), 2, " ms"),
                _fmt(median(r.get(f"{prefix}_p99_ms") for r in runs), 2, " ms"),
                _fmt(median(r.get(f"{prefix}_max_ms") for r in runs), 2, " ms"),
                _fmt(median(r.get(f"{prefix}_start_p50_ms") for r in runs), 2, " ms"),
                goal,
            ]
        )
    return out


def goals(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) for issue 23's performance points measured here."""

    def verdict(value: float | None, ok: bool) -> str:
        return "not measured" if value is None else ("met" if ok else "NOT met")

    r = ratio(results)
    runs = _runs(results, "steps")
    sleep = median(x.get("sleep_p99_ms") for x in runs)
    event = median(x.get("event_p99_ms") for x in runs)
    return [
        (
            f"durable run of {STEPS} no-op steps ≥ {THROUGHPUT_GOAL}× {STEPS} plain no-op tasks (bodies/s)",
            "–" if r is None else f"{r:.2f}×",
            verdict(r, r is not None and r >= THROUGHPUT_GOAL),
        ),
        (
            f"sleep resume lateness p99 ≤ {SLEEP_P99_MS:g} ms",
            _fmt(sleep, 2, " ms"),
            verdict(sleep, sleep is not None and sleep <= SLEEP_P99_MS),
        ),
        (
            f"event → woken run p99 ≤ {EVENT_P99_MS:g} ms (idle worker)",
            _fmt(event, 2, " ms"),
            verdict(event, event is not None and event <= EVENT_P99_MS),
        ),
    ]
