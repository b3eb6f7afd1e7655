# ruff: noqa: RUF001
"""bench/durable.py: one worker drains N durable runs of 10 steps and 10·N plain tasks (every body, every run
and every step counted from the functions' own side effects and the run store), its sleepers and waiters each
stamp their resume, and the report gives the tables and issue 23's three goal rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import durable, report
from bench.apps import probe
from bench.redis_server import RedisServer
from bench.redis_server import redis_server as private_redis

pytestmark = pytest.mark.timeout(180)

UNITS = 200  # 20 durable runs of 10 steps, 200 plain tasks
SAMPLES = 10


@pytest.fixture(scope="module")
def bench_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


def test_steps_and_tasks_do_the_same_work_and_every_wait_resumes(bench_redis: RedisServer, tmp_path: Path) -> None:
    steps, tasks = durable.VARIANTS
    why = steps.unavailable()
    if why:
        pytest.skip(why)
    runs = {}
    for variant, samples in ((steps, SAMPLES), (tasks, 0)):
        runs[variant.key] = durable.durable_run(variant, bench_redis, UNITS, samples, tmp_path, "t")
        with bench_redis.client() as c:
            assert int(c.get(probe.DONE) or 0) == UNITS, variant.key  # every body ran once, no more
        assert runs[variant.key]["units_per_s"] > 0
    got = runs["steps"]
    assert got["runs"] == UNITS // durable.STEPS and got["runs_done"] == got["runs"]
    assert got["steps_saved"] == UNITS  # one row per step, each saved once
    assert got["sleep_n"] == SAMPLES and got["event_n"] == SAMPLES  # every sleeper and waiter stamped its resume
    assert 0 <= got["sleep_p50_ms"] <= got["sleep_p99_ms"] < 1000  # resumed after its time, within a second
    assert 0 <= got["event_p50_ms"] <= got["event_p99_ms"] < 1000
    assert "runs_done" not in runs["tasks"]

    results = {
        "conditions": {"tasks": UNITS},
        "durable": {
            "baseline": durable.BASELINE,
            "systems": {v.key: {"label": v.label, "runs": [runs[v.key]]} for v in durable.VARIANTS},
        },
    }
    table = report.tables(results)
    assert "### Durable functions: 20 runs of 10 no-op steps against 200 no-op tasks" in table
    assert "1.00× (baseline)" in table and "sleep resume lateness" in table and "event sent → woken run" in table
    goals = {goal: (measured, verdict) for goal, measured, verdict in report.goals(results)}
    ratio = got["units_per_s"] / runs["tasks"]["units_per_s"]
    assert goals["durable run of 10 no-op steps ≥ 1.0× 10 plain no-op tasks (bodies/s)"][0] == f"{ratio:.2f}×"
    sleep = goals["sleep resume lateness p99 ≤ 50 ms"]
    assert sleep[0] == f"{got['sleep_p99_ms']:,.2f} ms" and sleep[1] in ("met", "NOT met")
    assert goals["event → woken run p99 ≤ 20 ms (idle worker)"][1] in ("met", "NOT met")
