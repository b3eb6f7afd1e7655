"""On Postgres a worker's batch of run updates is one statement, counted once (statement-level triggers over its
transition tables, issue 25 point 3): a trigger per row ran once per run and wrote two `run_counts` rows for each.
A database whose row trigger 0004 made is moved to them by 0007, and back by its downgrade."""

from __future__ import annotations

import math

import pytest
from sqlalchemy import create_engine, text

from runtime.settings import Settings
from runtime.store.migrations import alembic_config, upgrade
from runtime.store.runs import RunStore
from runtime.worker.middleware.records import FINISHED, RUNNING
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.runtime.store.test_migrations import sync_url
from tests.runtime.store.test_runs import group_by, run, state

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="no Postgres reachable (set TEST_POSTGRES_URL)")


@pytest.fixture
def url() -> str:
    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    return Settings(database_url=POSTGRES_URL).database_url


async def count_rows(store: RunStore) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.exec_driver_sql("SELECT COUNT(*) FROM run_counts")).scalar() or 0)


async def changes_counted(store: RunStore) -> list[int]:
    """`run_counts` rows written by a batch of 10 updates, then by a delete of 4 runs (folds held off)."""
    store._fold_due = math.inf
    for i in range(10):  # one at a time: counted by the trigger of any revision (a bulk counts itself at 0008)
        await store.insert_many([run(f"r{i}", "f")])
    await store.fold_counts()
    before = await count_rows(store)
    await store.update_many([state(f"r{i}", "running", RUNNING) for i in range(10)])
    updated = await count_rows(store)
    await store.update_many([state(f"r{i}", "succeeded", FINISHED) for i in range(4)])
    await store.delete_many([f"r{i}" for i in range(4)])
    assert await store.counts() == await group_by(store) == {"f": {"running": 6}}
    return [updated - before, await count_rows(store) - updated]


async def test_a_batch_of_updates_is_counted_once_for_the_batch(url: str) -> None:
    store = RunStore(url)
    await store.init()
    # queued -10 and running +10; then succeeded +4 and running -4, and the delete's succeeded -4 (a row trigger
    # wrote 20 rows for the first batch, 8 and 4 for the rest)
    assert await changes_counted(store) == [2, 3]
    await store.close()


async def test_0007_moves_a_database_from_row_triggers_to_statement_triggers_and_back(url: str) -> None:
    await upgrade(url)  # created at the head
    engine = create_engine(sync_url(url))

    def migrate(to: str) -> None:
        from alembic import command

        with engine.begin() as conn:
            (command.downgrade if to == "0006" else command.upgrade)(alembic_config(conn), to)

    migrate("0006")
    store = RunStore(url)
    assert await changes_counted(store) == [20, 12]  # 0004's trigger: two rows a changed run, one a deleted one
    await store.close()
    reset_counts = "DELETE FROM runs; DELETE FROM run_counts"
    with engine.begin() as conn:
        conn.exec_driver_sql(reset_counts)
    migrate("0007")
    store = RunStore(url)
    assert await changes_counted(store) == [2, 3]
    await store.close()
    with engine.connect() as conn:
        triggers = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'runs'::regclass")).scalars()
        assert sorted(triggers) == ["runs_count", "runs_count_delete", "runs_count_update"]
    engine.dispose()
