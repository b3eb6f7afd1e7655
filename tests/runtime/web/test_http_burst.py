"""A burst of concurrent requests on `runtime web` (the example app, a real subprocess): more at once than
the Redis and database pools hold. Each must wait for a connection, never get a 5xx."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL, RedisServer, reset_postgres
from tests.runtime.web.test_http_limits import start_web

BURST = 200


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
async def test_a_burst_of_concurrent_posts_gets_no_5xx(
    redis_server: RedisServer, tmp_path: Path, database: str
) -> None:
    env = {"REQUEST_TIMEOUT": "30"}
    if database == "postgres":
        if POSTGRES_URL is None:
            pytest.skip("no Postgres reachable (set TEST_POSTGRES_URL)")
        reset_postgres(POSTGRES_URL)
        env["DATABASE_URL"] = POSTGRES_URL
    process, port = start_web(redis_server, tmp_path, **env)
    try:
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:

            async def create(i: int) -> httpx.Response:
                return await client.post("/briefings", json={"topic": f"burst {i}"})

            responses = await asyncio.gather(*(create(i) for i in range(BURST)))
        statuses = Counter(r.status_code for r in responses)
        failures = [(r.status_code, r.text[:200]) for r in responses if r.status_code >= 500][:5]
        assert statuses == {202: BURST}, (statuses, failures, process.output[-3000:])
        assert len({r.json()["id"] for r in responses}) == BURST
    finally:
        process.stop()


# The broker's pool (max_connections=50) raises MaxConnectionsError past 50 commands at once, which /health
# reports as "redis: down"; redis-py's BlockingConnectionPool makes a command wait for a connection instead.
async def test_a_burst_of_health_checks_sees_redis_busy_not_down(redis_server: RedisServer, tmp_path: Path) -> None:
    process, port = start_web(redis_server, tmp_path, REQUEST_TIMEOUT="30")
    try:
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=60) as client:
            responses = await asyncio.gather(*(client.get("/health") for _ in range(BURST)))
        statuses = Counter(r.status_code for r in responses)
        failures = [r.text[:300] for r in responses if r.status_code != 200][:3]
        assert statuses == {200: BURST}, (statuses, failures)
    finally:
        process.stop()
