# ruff: noqa: RUF001
"""Flow control's price (issue 24): no-op throughput of one worker when no function has a limit, when a limit is
declared on another function (the gate exists, these runs pass none), and when every run holds a slot of a
1,000-key concurrency limit of 5 (runtime/flow/gate.py: a slot taken in the run's start mark, and freed at its
end by one script per loop turn).

The three runs enqueue the same messages (`flow_functions:keyed`, `k` cycling over 1,000 values, bulk-filled:
the fill is not what is measured); only the worker's manifest differs. They alternate within each repetition, in
reverse order every other one (A B C, C B A, ...: a machine slowing down through the run favours none of them),
and the ratios pair the runs of one repetition, as every phase does against its baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.redis_server import RedisServer
from bench.stats import median, paired_ratio
from bench.systems import OURS, OURS_DIR, VENV_BIN, TaskSystem
from bench.tasks import _drain, _producer, _run_dir

BASELINE = "none"
KEYED_GOAL = 0.8  # issue 24: with a concurrency key, at least 0.8x the throughput without it
NOISE = 0.95  # "pays nothing": within this of the run without limits


@dataclass
class FlowVariant(TaskSystem):
    manifest: Path = OURS_DIR / "flow-none.yaml"

    def env(self, redis_url: str, tmpdir: Path) -> dict[str, str]:
        return super().env(redis_url, tmpdir) | {"BENCH_FLOW_MANIFEST": str(self.manifest)}


def _variant(key: str, label: str) -> FlowVariant:
    manifest = OURS_DIR / f"flow-{key}.yaml"
    return FlowVariant(
        key=key,
        label=label,
        module="bench.apps.flow_app",
        worker=lambda mode: [str(VENV_BIN / "runtime"), "worker", "--manifest", str(manifest)],
        cwd=OURS_DIR,
        check=OURS.check,
        records=True,
        bulk=True,
        manifest=manifest,
    )


VARIANTS = [
    _variant("none", "no limits in the app (no gate)"),
    _variant("elsewhere", "a concurrency limit on another function"),
    _variant("keyed", "concurrency {limit: 5, key: k}, 1,000 keys"),
]


def _commands(redis: RedisServer) -> dict[str, int]:
    with redis.client() as c:
        stats = c.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def flow_run(variant: FlowVariant, redis: RedisServer, n: int, tmpdir: Path, tag: str) -> dict[str, Any]:
    """One drain of n pre-filled runs by one worker with this variant's manifest: tasks/s, and the Redis commands
    (scripts apart) the worker sent per task."""
    redis.flush()
    tmpdir = _run_dir(tmpdir, "flow", variant)
    _producer(variant, "bulk", n, redis, tmpdir)
    before = _commands(redis)

    def count(result: dict[str, Any]) -> None:
        after = _commands(redis)
        calls = {k: v - before.get(k, 0) for k, v in after.items()}
        calls.pop("info", None)  # the harness's own
        scripts = sum(v for k, v in calls.items() if k in ("evalsha", "eval", "fcall"))
        result["redis_commands_per_task"] = sum(calls.values()) / n
        result["scripts_per_task"] = scripts / n
        result["calls_per_task"] = {k: v / n for k, v in sorted(calls.items())}  # scripts' own commands included

    result = _drain(variant, variant.worker("throughput"), redis, n, tmpdir, f"flow-{variant.key}-{tag}", then=count)
    return {"n": n, **result}


def _runs(results: dict[str, Any], key: str) -> list[dict[str, Any]]:
    entry = results["flow"]["systems"].get(key, {})
    return [] if entry.get("skipped") else entry.get("runs", [])


def ratio(results: dict[str, Any], key: str) -> float | None:
    """Paired tasks/s of a variant against the run without limits made just before it."""
    ours = [r.get("tasks_per_s") for r in _runs(results, key)]
    base = [r.get("tasks_per_s") for r in _runs(results, BASELINE)]
    return paired_ratio(ours, base)


def rows(results: dict[str, Any]) -> list[list[str]]:
    """The flow table's rows: worker's manifest, tasks/s, Redis commands and scripts per task, ratio."""

    def fmt(value: float | None, digits: int) -> str:
        return "–" if value is None else f"{value:,.{digits}f}"

    out = []
    for key, entry in results["flow"]["systems"].items():
        if entry.get("skipped"):
            out.append([entry["label"], f"not available: {entry['skipped']}", "", "", "", ""])
            continue
        runs = entry["runs"]
        errors = [r["error"] for r in runs if "error" in r]
        failed = f" ({len(errors)} of {len(runs)} runs failed: {errors[0][:160]})" if errors else ""
        r = ratio(results, key)
        out.append(
            [
                entry["label"] + failed,
                fmt(median(r.get("tasks_per_s") for r in runs), 0),
                fmt(median(r.get("redis_cpu_us_per_task") for r in runs), 1) + " µs",
                fmt(median(r.get("redis_commands_per_task") for r in runs), 2),
                fmt(median(r.get("scripts_per_task") for r in runs), 2),
                "1.00× (baseline)" if key == BASELINE else ("–" if r is None else f"{r:.2f}×"),
            ]
        )
    return out


HEADER = [
    "worker's manifest",
    "tasks/s",
    "Redis CPU per task",
    "Redis commands per task (scripts' own included)",
    "scripts per task",
    "× none",
]


def goals(results: dict[str, Any]) -> list[tuple[str, str, float | None, float]]:
    """(goal, measured ratio, bound) for issue 24's two performance points."""
    return [
        (
            f"a task without limits pays nothing: ≥ {NOISE}× with a limit on another function",
            ratio(results, "elsewhere"),
            NOISE,
        ),
        (f"concurrency key (1,000 keys, limit 5) ≥ {KEYED_GOAL}× no limits", ratio(results, "keyed"), KEYED_GOAL),
    ]
