"""A poison task (it SIGKILLs its own worker) is run at most retries+1 times, then recorded `failed`
("worker died while running this task") and dead-lettered; every other task still completes."""

from __future__ import annotations

import pytest
import redis

from tests.chaos.harness import POISON_DELIVERIES, Ledger, Record, SideEffects, client, judge, wait_drained, worker_env

pytestmark = pytest.mark.chaos


async def test_poison_task_is_failed_after_its_deliveries_and_dead_lettered(
    chaos_app, redis_url, tmp_path, effects_log, fleets
):
    database_url = f"sqlite:///{tmp_path}/runs.db"
    fleet = fleets(chaos_app, worker_env(redis_url, database_url, effects_log))
    ledger, effects = Ledger(), SideEffects(effects_log)
    dead_key = "chaos:dead"
    async with client(chaos_app, redis_url, database_url) as runtime:
        fleet.start(2)
        await ledger.enqueue(runtime, "poison", [{}])
        await ledger.enqueue(runtime, "quick", [{"pause": 0.2}] * 300)
        [poison_token] = [t for t, f in ledger.function.items() if f == "poison"]
        poison_id = ledger.runs[poison_token]
        dead = redis.Redis.from_url(redis_url)

        def poison_settled(records: dict[str, Record]) -> bool:
            return records.get(poison_id) is not None and dead.zscore(dead_key, poison_id) is not None

        drain, records = await wait_drained(ledger, effects, database_url, 30.0, also=poison_settled, fleet=fleet)
    effects.read()
    starts = len(effects.starts.get(poison_token, []))
    deaths = len(fleet.deaths)
    poison = records.get(poison_id)
    in_dead = dead.zscore(dead_key, poison_id) is not None
    outcome = judge(
        "poison",
        ledger,
        effects,
        records,
        fleet,
        drain,
        f"worker_deaths={deaths}",
        extra=(
            f"poison_starts={starts} (allowed {POISON_DELIVERIES}) "
            f"poison_record={poison.status if poison else None}/attempts={poison.attempts if poison else None} "
            f"dead_lettered={in_dead}"
        ),
    )
    assert starts <= POISON_DELIVERIES, outcome.explain()
    assert poison is not None and poison.status == "failed" and poison.attempts == POISON_DELIVERIES, outcome.explain()
    assert "died" in (poison.last_error or ""), f"poison's last error: {poison.last_error!r}\n{outcome.explain()}"
    assert in_dead, outcome.explain()
    assert outcome.ok, outcome.explain()
