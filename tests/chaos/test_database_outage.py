"""A database outage while workers run tasks: a TCP proxy in front of Postgres drops every connection and
refuses new ones for a while (and a worker is killed meanwhile). Once it is back, every task has run and
every record agrees with what ran."""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.harness import (
    FULL,
    Ledger,
    SideEffects,
    TcpProxy,
    client,
    judge,
    postgres_address,
    wait_drained,
    wait_until,
    worker_env,
)
from tests.conftest import POSTGRES_URL, reset_postgres

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(POSTGRES_URL is None, reason="no Postgres reachable (set TEST_POSTGRES_URL)"),
]


async def test_database_outage_during_processing(chaos_app, redis_url, effects_log, fleets):
    assert POSTGRES_URL is not None
    tasks, outage = (5_000, 30.0) if FULL else (1_500, 6.0)
    reset_postgres(POSTGRES_URL)
    proxy = TcpProxy(postgres_address(POSTGRES_URL))
    fleet = fleets(chaos_app, worker_env(redis_url, proxy.url(POSTGRES_URL), effects_log))
    ledger, effects = Ledger(), SideEffects(effects_log)
    try:
        async with client(chaos_app, redis_url, POSTGRES_URL) as runtime:  # the enqueue side sees no outage
            for _ in range(3):
                await ledger.enqueue(runtime, "quick", [{"pause": 0.1}] * (tasks // 3))
            await ledger.enqueue(runtime, "long", [{"seconds": outage / 2}] * 4)
            fleet.start(2)

            def under_way() -> bool:
                effects.read()
                return len(effects.ends) >= tasks // 10

            await wait_until(under_way, 30, "a tenth of the tasks ran")
            proxy.down()
            await asyncio.sleep(outage / 2)
            fleet.kill_random()  # its finished-but-unrecorded runs must run again elsewhere
            await asyncio.sleep(outage / 2)
            proxy.up()
            drain, records = await wait_drained(ledger, effects, POSTGRES_URL, 30.0, fleet=fleet)
    finally:
        proxy.close()
    outcome = judge(
        "database-outage postgres", ledger, effects, records, fleet, drain, f"outage={outage:.0f}s kills={fleet.kills}"
    )
    assert outcome.ok, outcome.explain()
