"""On Postgres a bulk enqueue counts its runs itself (migration 0008): a `run_counts` row per function and status, not
one per run from the insert trigger, which still counts every other insert (one run, a worker's upsert, one by hand,
one on the bulk's connection after it) exactly. A database at 0007 is moved to it by 0008, and back by its
downgrade."""

from __future__ import annotations

import asyncio
import math

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from runtime.settings import Settings
from runtime.store.migrations import alembic_config, upgrade
from runtime.store.postgres_insert import COUNTED_AT_ONCE
from runtime.store.runs import RunStore
from runtime.worker.middleware.records import FINISHED, RUNNING
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.runtime.store.test_count_statements import count_rows
from tests.runtime.store.test_migrations import sync_url
from tests.runtime.store.test_runs import group_by, run, state

pytestmark = pytest.mark.skipif(POSTGRES_URL is None, reason="no Postgres reachable (set TEST_POSTGRES_URL)")


@pytest.fixture
def url() -> str:
    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    return Settings(database_url=POSTGRES_URL).database_url


def mixed(prefix: str, n: int) -> list[dict[str, object]]:
    """n new runs of two functions, queued and scheduled, as an enqueue_many's rows."""
    runs = [run(f"{prefix}{i}", "f" if i % 3 else "g", "scheduled" if i % 2 else "queued") for i in range(n)]
    return [r.model_dump() for r in runs]


async def test_a_bulk_enqueue_writes_one_count_row_per_function_and_status(url: str) -> None:
    store = RunStore(url)
    await store.init()
    store._fold_due = math.inf
    await store.insert_many(mixed("r", 1000))
    assert await count_rows(store) == 4  # the row trigger wrote 1000
    assert (
        await store.counts()
        == await group_by(store)
        == {
            "f": {"queued": 333, "scheduled": 333},
            "g": {"queued": 167, "scheduled": 167},
        }
    )
    await store.close()


async def test_every_other_insert_is_counted_too(url: str) -> None:
    """One run alone, runs the worker recorded first (its upsert inserts them, the bulk's then updates them), an id
    twice in a batch, runs after a bulk on its connection, and an insert by hand in a session of its own."""
    store = RunStore(url)
    await store.init()
    await store.insert_many([run("alone", "f")])
    await store.update_many([state(f"w{i}", "running", RUNNING) for i in range(5)])  # the worker was first
    await store.insert_many(mixed("w", COUNTED_AT_ONCE))  # five of them updated, not inserted: not new
    await store.insert_many([run("twice", "f"), run("twice", "f"), run("once", "g")])
    await store.insert_many(mixed("b", COUNTED_AT_ONCE))
    await store.insert_many(mixed("few", COUNTED_AT_ONCE - 1))  # a statement a row, counted by the trigger
    await store.insert_many([run("after", "g")])  # the bulk's connection: its transaction's setting is gone
    await store.update_many([state(f"new{i}", "running", RUNNING) for i in range(3)])
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql(
            "INSERT INTO runs (id, function, arguments, status, attempts, max_attempts, enqueued_at, history, version,"
            " queue) SELECT 'hand' || i, 'h', '{}', 'queued', 0, 1, now(), '[]', 0, 'default'"
            " FROM generate_series(1, 3) AS i"
        )
    assert await store.counts() == await group_by(store)
    assert (await store.counts())["h"] == {"queued": 3}
    await store.fold_counts()
    assert await store.counts() == await group_by(store)
    await store.close()


async def test_bulk_and_single_enqueues_and_workers_at_once_leave_the_counts_exact(url: str) -> None:
    stores = [RunStore(url) for _ in range(4)]
    await stores[0].init()

    async def bulk(store: RunStore, prefix: str) -> None:
        for chunk in range(5):
            await store.insert_many(mixed(f"{prefix}{chunk}-", 200))

    async def singles(store: RunStore) -> None:
        for i in range(100):
            await store.insert_many([run(f"s{i}", "g")])

    async def worker(store: RunStore) -> None:
        for i in range(0, 200, 10):  # runs of the bulks, some before their enqueue recorded them
            await store.update_many([state(f"a0-{j}", "running", RUNNING) for j in range(i, i + 10)])
            await store.update_many([state(f"b0-{j}", "succeeded", FINISHED, function="g") for j in range(i, i + 10)])
            await asyncio.sleep(0)

    await asyncio.gather(bulk(stores[0], "a"), bulk(stores[1], "b"), singles(stores[2]), worker(stores[3]))
    assert await stores[0].counts() == await group_by(stores[0])
    assert sum(n for statuses in (await stores[0].counts()).values() for n in statuses.values()) == 2100
    for store in stores:
        await store.close()


async def test_a_failed_bulk_enqueue_counts_nothing(url: str) -> None:
    store = RunStore(url)
    await store.init()
    await store.insert_many(mixed("r", 10))
    bad = mixed("x", 100)
    bad[50]["status"] = None  # NOT NULL: the statement fails halfway through its rows
    with pytest.raises(IntegrityError):
        await store.insert_many(bad)
    await store.insert_many([run("after", "f", "scheduled")])  # rolled back: its connection's trigger counts again
    assert (
        await store.counts()
        == await group_by(store)
        == {"f": {"queued": 3, "scheduled": 4}, "g": {"queued": 2, "scheduled": 2}}
    )
    await store.close()


def insert_trigger_skips_counted(engine) -> bool:
    with engine.connect() as conn:
        source = conn.execute(text("SELECT prosrc FROM pg_proc WHERE proname = 'runs_count'")).scalar_one()
    return "runs.counted" in source


async def test_0008_lets_a_bulk_insert_count_itself_and_its_downgrade_takes_it_back(url: str) -> None:
    await upgrade(url)  # created at the head
    engine = create_engine(sync_url(url))
    assert insert_trigger_skips_counted(engine)

    def migrate(to: str) -> None:
        from alembic import command

        with engine.begin() as conn:
            (command.downgrade if to == "0007" else command.upgrade)(alembic_config(conn), to)

    def rows_counted_by_the_trigger(prefix: str) -> int:
        """`run_counts` rows the insert trigger writes for 100 runs inserted in a transaction that says it counts
        them itself."""
        with engine.begin() as conn:
            before = conn.exec_driver_sql("SELECT COUNT(*) FROM run_counts").scalar_one()
            conn.exec_driver_sql("SET LOCAL runs.counted = 'on'")
            conn.exec_driver_sql(
                "INSERT INTO runs (id, function, arguments, status, attempts, max_attempts, enqueued_at, history,"
                f" version, queue) SELECT '{prefix}' || i, 'h', '{{}}', 'queued', 0, 1, now(), '[]', 0, 'default'"
                " FROM generate_series(1, 100) AS i"
            )
            return int(conn.exec_driver_sql("SELECT COUNT(*) FROM run_counts").scalar_one() - before)

    async def rows_of_a_bulk(prefix: str) -> int:
        store = RunStore(url)
        store._fold_due = math.inf
        await store.fold_counts()
        before = await count_rows(store)
        await store.insert_many(mixed(prefix, 100))
        written = await count_rows(store) - before
        await store.close()
        return written

    migrate("0007")
    assert not insert_trigger_skips_counted(engine)
    assert rows_counted_by_the_trigger("a") == 100
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM runs; DELETE FROM run_counts")
    migrate("0008")
    assert insert_trigger_skips_counted(engine)
    assert rows_counted_by_the_trigger("b") == 0
    with engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM runs; DELETE FROM run_counts")
    assert await rows_of_a_bulk("c") == 4
    store = RunStore(url)
    assert (
        await store.counts()
        == await group_by(store)
        == {"f": {"queued": 33, "scheduled": 33}, "g": {"queued": 17, "scheduled": 17}}
    )
    await store.close()
    with engine.connect() as conn:
        triggers = conn.execute(text("SELECT tgname FROM pg_trigger WHERE tgrelid = 'runs'::regclass")).scalars()
        assert sorted(triggers) == ["runs_count", "runs_count_delete", "runs_count_update"]
    engine.dispose()
