"""A worker's batch of run updates is written by the driver itself (sqlite3 on the loop's thread, asyncpg), not
through SQLAlchemy's engine, and stores exactly what the engine stores (issue 25: the engine's pool checkout,
greenlet switches and thread hops were a fifth of a no-op task's worker CPU on SQLite)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import event, text

from runtime.settings import Settings
from runtime.store.runs import RunStore
from runtime.store.values import utcnow
from runtime.worker.middleware.records import FINISHED, RUNNING
from tests.runtime.store.test_runs import state


async def test_a_batch_of_updates_skips_the_engine_and_writes_what_the_engine_writes(database_url):
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    assert store.fast_insert is not None
    checkouts: list[object] = []
    event.listen(store.engine.sync_engine, "checkout", lambda *args: checkouts.append(args))
    when = utcnow()
    done = {
        "finished_at": when + timedelta(seconds=1),
        "result": {"text": 'é 🎉 "q"', "list": [1, 2.5, None]},
        "history": [{"attempt": 1, "started_at": 1.5, "error": None}],
        "trace_id": "ab" * 16,
        "waiting_for": None,
    }
    at = {"enqueued_at": when, "started_at": when}
    # a row to update (not only rows to insert); versions grow with time, so it is written first
    await store.update_many([state("fast0", "running", RUNNING, **at)])
    engine_first = [state("engine0", "running", RUNNING, **at)]
    rows = [state(f"fast{i}", "succeeded", FINISHED, **done, **at) for i in range(3)]
    await store.update_many(rows)
    assert checkouts == [], "the worker's updates went through the engine"

    fast, store.fast_insert = store.fast_insert, None
    await store.update_many(engine_first)
    await store.update_many([r | {"id": r["id"].replace("fast", "engine")} for r in rows])
    store.fast_insert = fast
    async with store.engine.connect() as conn:
        stored = {r[0]: r[1:] for r in (await conn.execute(text("SELECT * FROM runs ORDER BY id"))).all()}
    for i in range(3):
        fast_row, engine_row = stored[f"fast{i}"], stored[f"engine{i}"]
        assert fast_row == engine_row
    saved = await store.get("fast0")
    assert saved is not None and saved.status == "succeeded" and saved.result == done["result"]

    await store.update_many([state("fast0", "running", RUNNING) | {"version": 1}])  # late: the newer state stays
    saved = await store.get("fast0")
    assert saved is not None and saved.status == "succeeded"
    await store.close()


async def test_big_arguments_are_written_by_the_driver_once_and_read_back(database_url):
    """A worker that records a run before its enqueue did writes its big arguments itself, without the engine (a
    worker makes none before it is needed: a 1 MB payload's first batch imported SQLAlchemy mid-drain)."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    checkouts: list[object] = []
    event.listen(store.engine.sync_engine, "checkout", lambda *args: checkouts.append(args))
    big = {"doc": "x" * 100_000, "n": 7}
    await store.update_many([state("big0", "running", RUNNING, arguments=big), state("big1", "running", RUNNING)])
    later = {"doc": "changed", "n": 8}  # a later update's arguments never replace the stored ones
    await store.update_many([state("big0", "succeeded", FINISHED, arguments=later | {"pad": "y" * 20_000})])
    assert checkouts == [], "the worker's updates went through the engine"
    saved = await store.get("big0")
    assert saved is not None and saved.status == "succeeded" and saved.arguments == big
    async with store.engine.connect() as conn:
        assert (await conn.execute(text("SELECT COUNT(*) FROM run_arguments"))).scalar() == 1
        row = (await conn.execute(text("SELECT arguments FROM runs WHERE id = 'big0'"))).scalar()
    assert row in ("{}", {})  # the row keeps none of them
    await store.close()
