"""Steps in the run store, on SQLite and Postgres: the saves of concurrent runs share one transaction (group
commit), the first outcome saved for a name wins, and a batch that fails fails each of its callers."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError

from runtime.settings import Settings
from runtime.store import steps as steps_module
from runtime.store.runs import RunStore
from runtime.store.step_record import StepRecord
from runtime.store.values import utcnow


def step(run_id: str, name: str, result: Any, status: str = "succeeded", **more: Any) -> StepRecord:
    now = utcnow()
    return StepRecord(
        run_id=run_id,
        name=name,
        status=status,
        result=None if result is None else str(result),
        started_at=more.pop("started_at", now),
        finished_at=now + timedelta(milliseconds=5),
        **more,
    )


async def store_for(database_url: str) -> RunStore:
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    return store


def ids(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


class Writes:
    """The transactions that wrote steps, as the database itself tells. On SQLite, the INSERTs into steps on
    the store's connections: sqlite3's trace callback on its own (opened by a first read), and SQLAlchemy's
    cursor events on the engine's. On Postgres, the distinct transaction ids (xmin) of the rows."""

    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.statements: list[str] = []
        fast = store.fast_insert
        for conn in (getattr(fast, "inline", None), getattr(fast, "conn", None)):
            if isinstance(conn, sqlite3.Connection):
                conn.set_trace_callback(self.statements.append)
        event.listen(store.engine.sync_engine, "before_cursor_execute", self._engine)

    def _engine(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        event.remove(self.store.engine.sync_engine, "before_cursor_execute", self._engine)

    def count(self, *prefixes: str) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(prefixes))

    async def transactions(self, run_ids: list[str]) -> int:
        if self.store.is_sqlite:
            return self.count("INSERT INTO STEPS")
        async with self.store.engine.connect() as conn:
            found = await conn.exec_driver_sql(
                "SELECT count(DISTINCT xmin::text) FROM steps WHERE run_id = ANY($1)", (run_ids,)
            )
            return int(found.scalar_one())


async def test_the_saves_of_concurrent_runs_share_one_transaction(database_url: str) -> None:
    store = await store_for(database_url)
    await store.steps.load("warm")  # opens the store's connections
    counted: list[str] = []
    steps_module.saved_observers.append(counted.append)
    writes = Writes(store)
    try:
        runs = ids(8)
        saved = await asyncio.gather(*(store.steps.save(step(r, "charge", i)) for i, r in enumerate(runs)))
        assert [s.result for s in saved] == [str(i) for i in range(8)]
        assert await writes.transactions(runs) == 1
        for i, r in enumerate(runs):  # durably saved, each as given
            assert (await store.steps.load(r))["charge"].result == str(i)
        assert counted == ["succeeded"] * 8
    finally:
        writes.close()
        steps_module.saved_observers.remove(counted.append)
        await store.close()


async def test_the_first_outcome_saved_for_a_name_wins_within_a_batch_and_across_batches(database_url: str) -> None:
    """Two executions of one run (one on a worker that lost its lease) save the same step at once: exactly
    one outcome is saved, and both get it; a later save of the name gets it too."""
    store = await store_for(database_url)
    counted: list[str] = []
    steps_module.saved_observers.append(counted.append)
    try:
        run, other = ids(2)
        first, second, beside = await asyncio.gather(
            store.steps.save(step(run, "pay", 1)),
            store.steps.save(step(run, "pay", 2, status="failed", error_type="E", error="no")),
            store.steps.save(step(other, "pay", 3)),
        )
        assert (first.status, first.result) == (second.status, second.result) == ("succeeded", "1")
        assert beside.result == "3"
        assert counted == ["succeeded", "succeeded"]  # one per row written
        late = await store.steps.save(step(run, "pay", 4))
        assert (late.result, late.status) == ("1", "succeeded")
        saved = (await store.steps.load(run))["pay"]
        assert (saved.result, saved.status, saved.error) == ("1", "succeeded", None)
        assert isinstance(saved.started_at, datetime) and saved.started_at == first.started_at
    finally:
        steps_module.saved_observers.remove(counted.append)
        await store.close()


async def test_a_batch_that_fails_fails_each_of_its_callers_who_then_save_alone(database_url: str) -> None:
    """The batch is one transaction: a row it cannot write fails every save in it (each caller retries, as
    on any failed save), and none of its rows is saved; each then saves on its own."""
    store = await store_for(database_url)
    try:
        good, bad = ids(2)
        broken = step(bad, "x", 1, started_at=None)  # NOT NULL: the database refuses the row
        results = await asyncio.gather(
            store.steps.save(step(good, "x", 1)), store.steps.save(broken), return_exceptions=True
        )
        assert all(isinstance(r, DBAPIError) for r in results), results
        assert await store.steps.load(good) == {}
        assert (await store.steps.save(step(good, "x", 1))).result == "1"
        with pytest.raises(DBAPIError):
            await store.steps.save(broken)
    finally:
        await store.close()


async def test_a_wait_takes_its_outcome_once(database_url: str) -> None:
    store = await store_for(database_url)
    try:
        (run,) = ids(1)
        began = await store.steps.save(step(run, "approval", '{"since": 1}', status="wait"))
        assert began.status == "wait"
        done = await store.steps.resolve(step(run, "approval", '{"ok": true}'))
        again = await store.steps.resolve(step(run, "approval", '{"ok": false}'))
        assert (done.status, done.result) == (again.status, again.result) == ("succeeded", '{"ok": true}')
        assert (await store.steps.load(run))["approval"].result == '{"ok": true}'
        assert (await store.steps.of_run(run))[0]["result"] == {"ok": True}
    finally:
        await store.close()


async def test_a_woken_wait_is_resolved_in_one_statement(sqlite_url: str) -> None:
    """The wake path: a woken run reads its steps (one SELECT) and gives its wait the event in one UPDATE ...
    RETURNING, not an UPDATE and then a SELECT."""
    store = await store_for(sqlite_url)
    try:
        (run,) = ids(1)
        await store.steps.save(step(run, "approval", '{"since": 1}', status="wait"))
        writes = Writes(store)
        try:
            assert (await store.steps.load(run))["approval"].status == "wait"
            assert (await store.steps.resolve(step(run, "approval", "1"))).result == "1"
            assert (writes.count("SELECT"), writes.count("UPDATE")) == (1, 1)
        finally:
            writes.close()
    finally:
        await store.close()
