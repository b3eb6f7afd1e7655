"""A bulk insert on SQLite counts its new runs once per function and status, in its own transaction, instead of by
the insert trigger's `run_counts` row a run (issue 25); every other writer is still counted by the trigger."""

from __future__ import annotations

import math

import pytest
from sqlalchemy.exc import IntegrityError

from runtime.settings import Settings
from runtime.store.runs import RunStore
from runtime.store.sqlite_insert import COUNTED_AT_ONCE
from runtime.worker.middleware.records import RUNNING
from tests.runtime.store.test_runs import group_by, run, state


async def count_rows(store: RunStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.exec_driver_sql("SELECT COUNT(*) FROM run_counts")).scalar() or 0)


async def insert_trigger(store: RunStore) -> list[str]:
    async with store.engine.connect() as conn:
        query = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name = 'runs_count_insert'"
        return list((await conn.exec_driver_sql(query)).scalars())


async def test_a_bulk_insert_counts_only_its_new_runs_exactly(database_url: str) -> None:
    """Runs the worker recorded first, and an id twice in the batch, are not new: counted as a scan gives."""
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    await store.update_many([state(f"r{i}", "running", RUNNING) for i in range(5)])  # the worker was first
    n = COUNTED_AT_ONCE + 10
    batch = [run(f"r{i}", "f" if i % 3 else "g", "scheduled" if i % 2 else "queued") for i in range(n)]
    await store.insert_many([*batch, run("r7", "f"), run("r8", "g")])
    assert await store.counts() == await group_by(store)
    assert sum(n for statuses in (await store.counts()).values() for n in statuses.values()) == n
    await store.insert_many([run("alone", "f")])  # one run: the trigger counts it
    await store.update_many([state("r20", "running", RUNNING, function="g")])
    await store.fold_counts()
    assert await store.counts() == await group_by(store)
    await store.close()


async def test_sqlite_writes_a_bulk_inserts_counts_once_per_function_and_status(tmp_path) -> None:
    store = RunStore(Settings(database_url=f"sqlite:///{tmp_path}/runs.db").database_url)
    await store.init()
    store._fold_due = math.inf
    await store.insert_many([run(f"r{i}", "f" if i % 2 else "g") for i in range(1000)])
    assert await count_rows(store) == 2  # the trigger wrote 1000
    assert await store.counts() == {"f": {"queued": 500}, "g": {"queued": 500}}
    assert await insert_trigger(store) == ["runs_count_insert"]  # there for every other writer
    await store.insert_many([run("one", "f")])
    assert await count_rows(store) == 3
    await store.close()


async def test_a_failed_bulk_insert_leaves_the_trigger_and_the_counts(tmp_path) -> None:
    store = RunStore(Settings(database_url=f"sqlite:///{tmp_path}/runs.db").database_url)
    await store.init()
    rows = [run(f"r{i}").model_dump() for i in range(COUNTED_AT_ONCE)]
    rows[-1]["function"] = None  # NOT NULL: the whole insert is rolled back
    with pytest.raises(IntegrityError):
        await store.insert_many(rows)
    assert await insert_trigger(store) == ["runs_count_insert"]
    assert await store.counts() == {}
    await store.insert_many([run("one", "f")])
    assert await store.counts() == await group_by(store) == {"f": {"queued": 1}}
    await store.close()
