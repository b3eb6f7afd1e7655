"""Worker SIGKILL storm (SQLite and Postgres): tasks flow in while a random worker is killed every few
seconds and restarted. Nothing is lost, every record agrees with what ran, and no healthy task runs twice
while the worker holding it lives."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.chaos.harness import FULL, Fleet, Killer, Ledger, SideEffects, client, judge, wait_drained, worker_env
from tests.conftest import POSTGRES_URL, reset_postgres

pytestmark = pytest.mark.chaos

TASKS = 10_000 if FULL else 2_000
WORKERS = 4 if FULL else 3
BATCHES = 60 if FULL else 20
ENQUEUE_SECONDS = 60.0 if FULL else 10.0  # tasks arrive over this long, while the killer runs
STORM_SECONDS = 120.0 if FULL else 16.0
KILL_EVERY = (2.0, 4.0) if FULL else (1.0, 2.0)
LONG_SECONDS = (15.0, 40.0) if FULL else (3.0, 6.0)
DRAIN_TIMEOUT = 180.0 if FULL else 40.0
# A storm restarts a worker every 1-2 s: each start costs a second of CPU on a 2-core machine. A lease must
# outlast such a starved second; 4 s does (2 s, the other scenarios' lease, once lost a live worker's lease).
STORM_LEASE = "4"


async def kill_storm(
    name: str, manifest: Path, redis_url: str, database_url: str, log: Path, fleets: Callable[..., Fleet]
) -> None:
    fleet = fleets(manifest, worker_env(redis_url, database_url, log, LEASE_SECONDS=STORM_LEASE))
    ledger, effects = Ledger(), SideEffects(log)
    async with client(manifest, redis_url, database_url) as runtime:
        fleet.start(WORKERS)
        started = time.monotonic()
        with Killer(fleet, KILL_EVERY):
            per_batch = TASKS // BATCHES
            for _ in range(BATCHES):
                await ledger.enqueue(runtime, "quick", [{"pause": 0.3}] * (per_batch - 1))
                await ledger.enqueue(runtime, "long", [{"seconds": random.uniform(*LONG_SECONDS)}])
                await asyncio.sleep(ENQUEUE_SECONDS / BATCHES)
            while time.monotonic() - started < STORM_SECONDS:
                await asyncio.sleep(0.2)
        drain, records = await wait_drained(ledger, effects, database_url, DRAIN_TIMEOUT)
    outcome = judge(name, ledger, effects, records, fleet, drain, f"kills={fleet.kills}")
    assert not ledger.raised, f"set-up: enqueue raised: {ledger.errors[:3]}"
    assert fleet.kills >= 5, f"set-up: only {fleet.kills} kills"
    assert outcome.ok, outcome.explain()


async def test_kill_storm_sqlite(chaos_app, redis_url, tmp_path, effects_log, fleets):
    await kill_storm("kill-storm sqlite", chaos_app, redis_url, f"sqlite:///{tmp_path}/runs.db", effects_log, fleets)


@pytest.mark.skipif(POSTGRES_URL is None, reason="no Postgres reachable (set TEST_POSTGRES_URL)")
async def test_kill_storm_postgres(chaos_app, redis_url, effects_log, fleets):
    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    await kill_storm("kill-storm postgres", chaos_app, redis_url, POSTGRES_URL, effects_log, fleets)
