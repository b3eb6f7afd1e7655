"""bench/enqueue_http.py: a short enqueue-endpoint run of ours and of Starlette + kiq(), each stream's new
entries within [2xx, 2xx + unanswered], and granian's hello run when granian is installed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import enqueue_http
from bench.redis_server import RedisServer
from bench.redis_server import redis_server as private_redis

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def bench_redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.mark.parametrize("system", ["ours", "starlette-kiq"])
def test_enqueue_run(system: str, bench_redis: RedisServer, tmp_path: Path) -> None:
    why = enqueue_http.check(system)
    if why:
        pytest.skip(why)
    result = enqueue_http.enqueue_run(system, bench_redis, 1, tmp_path, "test")
    assert result["rps"] > 0
    assert result["errors"] == 0
    assert result["requests"] > 0 and result["ok_2xx"] == result["requests"]
    # every 2xx is one new stream entry; requests wrk left unanswered at its deadline may have been enqueued
    assert result["ok_2xx"] <= result["stream_entries"] <= result["ok_2xx"] + result["unanswered"], result
    assert result["lost"] == 0 and result["stream_ok"]
    if system == "ours":
        assert result["records"] == result["stream_total"], "a run record for every stream entry"


def test_lost_enqueues() -> None:
    assert enqueue_http.lost_enqueues(100, 100, 64) == 0
    assert enqueue_http.lost_enqueues(163, 100, 64) == 0
    assert enqueue_http.lost_enqueues(98, 100, 64) == -2
    assert enqueue_http.lost_enqueues(170, 100, 64) == 6
