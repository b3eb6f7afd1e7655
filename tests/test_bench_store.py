"""bench/store.py: a small SQLite run store filled set-based (every row counted), and one short
/api/stats run through a real `runtime dashboard` process on it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import report, store
from bench.redis_server import RedisServer
from bench.redis_server import redis_server as private_redis
from runtime.store.runs import RunStore
from runtime.store.values import STATUSES

pytestmark = pytest.mark.timeout(120)

ROWS = 2000


@pytest.fixture(scope="module")
def bench_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


def test_fill_counts_every_row(tmp_path: Path) -> None:
    url = store.database_for("sqlite", tmp_path)
    assert store.fill(url, ROWS) > 0

    async def read() -> tuple[dict[str, dict[str, int]], int]:
        runs = RunStore(store.async_url(url))
        try:
            counts = await runs.counts()
            listed = len(await runs.list(limit=10))
        finally:
            await runs.close()
        return counts, listed

    counts, listed = asyncio.run(read())
    assert sum(n for by_status in counts.values() for n in by_status.values()) == ROWS
    assert len(counts) == store.FUNCTIONS
    assert {s for by_status in counts.values() for s in by_status} <= set(STATUSES)
    assert counts["task_00"]["succeeded"] > counts["task_00"]["failed"] > 0
    assert listed == 10  # the rows load as Run models (dates, JSON columns)


def test_stats_run(bench_redis: RedisServer, tmp_path: Path) -> None:
    why = store.check()
    if why:
        pytest.skip(why)
    result = store.stats_run("sqlite", ROWS, bench_redis.url, tmp_path, requests=10)
    assert result["rows"] == result["counted"] == result["first_runs"] == ROWS
    for field in ("fill_s", "count_ms", "first_ms", "p50_ms", "p99_ms", "max_ms"):
        assert result[field] > 0, field
    assert result["max_age_s"] >= 0
    assert result["throughput_p50_ms"] > 0
    results = {"conditions": {}, "store": {"rows": ROWS, "backends": {"sqlite": {"runs": [result]}}}}
    shown = report.tables(results)
    assert "with 2,000 runs" in shown and "| sqlite |" in shown
    [(goal, measured, verdict)] = report.goals(results)
    assert goal.startswith("`/api/stats` p99 at 2,000 runs") and verdict in ("met", "NOT met"), goal
    assert measured.endswith(" ms"), measured
