# ruff: noqa: RUF001
"""bench/flow.py: the three workers drain every run (counted by the tasks' own probe), only the keyed one passes
the gate (a slot taken and freed per run, with no admit script of its own), and the report gives the table and
issue 24's two goals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import flow, report
from bench.apps import probe
from bench.redis_server import RedisServer
from bench.redis_server import redis_server as private_redis

pytestmark = pytest.mark.timeout(180)

N = 200


@pytest.fixture(scope="module")
def bench_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


def test_only_the_keyed_worker_passes_the_gate(bench_redis: RedisServer, tmp_path: Path) -> None:
    why = flow.VARIANTS[0].unavailable()
    if why:
        pytest.skip(why)
    runs = {}
    for variant in flow.VARIANTS:
        runs[variant.key] = flow.flow_run(variant, bench_redis, N, tmp_path, "t")
        with bench_redis.client() as c:
            assert int(c.get(probe.DONE) or 0) == N, variant.key
        assert runs[variant.key]["tasks_per_s"] > 0
    # the probe is one script per run in every variant; only the keyed runs take a slot (ZADD, in the start mark)
    # and free it (ZREM, in the release script, one per loop turn), one each per run
    assert runs["elsewhere"]["scripts_per_task"] < runs["none"]["scripts_per_task"] + 0.5
    for command in ("zadd", "zrem"):
        calls = {key: run["calls_per_task"].get(command, 0.0) for key, run in runs.items()}
        assert calls["keyed"] >= calls["none"] + 1 and calls["elsewhere"] < calls["none"] + 0.5, (command, calls)
    assert runs["keyed"]["scripts_per_task"] < runs["none"]["scripts_per_task"] + 1  # no admit script per run

    results = {
        "conditions": {"tasks": N},
        "flow": {
            "baseline": flow.BASELINE,
            "systems": {v.key: {"label": v.label, "runs": [runs[v.key]]} for v in flow.VARIANTS},
        },
    }
    table = report.tables(results)
    assert "### Flow control" in table and "1.00× (baseline)" in table
    goals = {goal: measured for goal, measured, _ in report.goals(results)}
    keyed = runs["keyed"]["tasks_per_s"] / runs["none"]["tasks_per_s"]
    assert any(g.startswith("concurrency key") and m == f"{keyed:.2f}×" for g, m in goals.items())
    assert any(g.startswith("a task without limits") for g in goals)
