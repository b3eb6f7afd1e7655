"""The steps table's rows as the driver writes them (runtime/store/step_sql.py, plain SQL and tuples, no SQLAlchemy)
are the rows SQLAlchemy's engine writes (runtime/store/step_engine.py, the path of tracing and of SQLite in memory):
the same values of the same types, read back as the same StepRecords either way, on SQLite and on Postgres."""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from datetime import datetime
from typing import Any

from runtime.settings import Settings
from runtime.store.models import Step
from runtime.store.runs import RunStore
from runtime.store.sqlite_insert import SqliteInsert
from runtime.store.step_record import COLUMNS, StepRecord
from runtime.store.steps import StepJournal

T0 = datetime(2026, 12, 7, 14, 34, 7, 935321)
T1 = datetime(2026, 12, 7, 14, 34, 8)  # no microseconds: still written with them, as SQLAlchemy does
T2 = datetime(1999, 1, 2, 3, 4, 5, 1)


def records(run_id: str) -> list[StepRecord]:
    """What a durable function saves: results, errors, a sleep, waits (resolved below)."""
    return [
        StepRecord(
            run_id=run_id,
            name="charge",
            status="succeeded",
            result='{"n": 1, "t": "é\\u0000"}',
            started_at=T0,
            finished_at=T1,
        ),
        StepRecord(
            run_id=run_id, name="charge#2", status="succeeded", result="null", attempts=3, started_at=T1, finished_at=T1
        ),
        StepRecord(
            run_id=run_id,
            name="refund",
            status="failed",
            error_type="ValueError",
            error="card 7 declined\nline two",
            attempts=2,
            started_at=T2,
            finished_at=T0,
        ),
        StepRecord(run_id=run_id, name="nap", status="sleep", result="1796654047.5", started_at=T0, finished_at=T2),
        StepRecord(
            run_id=run_id,
            name="approval",
            status="wait",
            result='{"since": 1.5, "until": 2.5}',
            started_at=T0,
            finished_at=T1,
        ),
        StepRecord(
            run_id=run_id,
            name="child",
            status="wait",
            result='{"since": 1.5, "child": "c"}',
            started_at=T0,
            finished_at=T1,
        ),
    ]


def outcomes(run_id: str) -> list[StepRecord]:
    """The waits' outcomes: an event's data, a child run's failure."""
    return [
        StepRecord(
            run_id=run_id, name="approval", status="succeeded", result='{"ok": true}', started_at=T0, finished_at=T2
        ),
        StepRecord(
            run_id=run_id,
            name="child",
            status="failed",
            error_type="ChildFailed",
            error="child run c failed: boom",
            started_at=T0,
            finished_at=T2,
        ),
    ]


async def raw_rows(store: RunStore, run_id: str) -> list[tuple[Any, ...]]:
    """The run's rows as the database holds them, with each value's type (SQLite's typeof; Python's on Postgres),
    read by the driver itself, without the run id."""
    names = ", ".join(COLUMNS[1:])
    if store.is_sqlite:
        assert isinstance(store.fast_insert, SqliteInsert)
        path = store.fast_insert.path
        typed = ", ".join(f"{name}, typeof({name})" for name in COLUMNS[1:])
        with closing(sqlite3.connect(path)) as conn:
            return conn.execute(f"SELECT {typed} FROM steps WHERE run_id = ? ORDER BY name", (run_id,)).fetchall()
    fast: Any = store.fast_insert
    rows = await fast.transact(
        lambda conn: conn.fetch(f"SELECT {names} FROM steps WHERE run_id = $1 ORDER BY name", run_id), "select"
    )
    return [tuple(v for value in row for v in (value, type(value).__name__)) for row in rows]


def without_run(steps: dict[str, StepRecord]) -> list[dict[str, Any]]:
    return [step.as_dict() | {"run_id": None} for _, step in sorted(steps.items())]


async def test_the_driver_writes_and_reads_the_rows_sqlalchemy_does(database_url: str) -> None:
    store = RunStore(Settings(database_url=database_url).database_url)
    await store.init()
    driver = store.steps
    engine = StepJournal(lambda: store.engine, "sqlite" if store.is_sqlite else "postgresql", None)
    assert driver.fast is not None
    try:
        runs = {"driver": uuid.uuid4().hex, "engine": uuid.uuid4().hex}
        saved: dict[str, list[StepRecord]] = {}
        for journal, run in ((driver, runs["driver"]), (engine, runs["engine"])):
            saved[run] = [await journal.save(step) for step in records(run)]
            saved[run] += [await journal.resolve(step) for step in outcomes(run)]
            saved[run] += [await journal.resolve(step) for step in outcomes(run)]  # resolved already: the first outcome
            saved[run] += [await journal.save(step) for step in records(run)[:3]]  # saved already: the saved one
        driver_rows, engine_rows = (await raw_rows(store, runs["driver"]), await raw_rows(store, runs["engine"]))
        assert len(driver_rows) == 6
        assert driver_rows == engine_rows
        if store.is_sqlite:
            assert driver_rows[0][12:16] == ("2026-12-07 14:34:07.935321", "text", "1999-01-02 03:04:05.000001", "text")
        else:
            assert driver_rows[0][12:16] == (T0, "datetime", T2, "datetime")
        # what each path returned, and what each reads of the other's rows
        assert [s.as_dict() | {"run_id": None} for s in saved[runs["driver"]]] == [
            s.as_dict() | {"run_id": None} for s in saved[runs["engine"]]
        ]
        for run in runs.values():
            assert without_run(await driver.load(run)) == without_run(await engine.load(run))
            assert await driver.of_run(run) == await engine.of_run(run)
        assert without_run(await driver.load(runs["driver"])) == without_run(await engine.load(runs["engine"]))
    finally:
        await store.close()


# what `Step.public()` showed for records() + outcomes() before steps were StepRecords (and the class lost it)
SHOWN = [
    {"name": "charge", "status": "succeeded", "error_type": None, "error": None, "attempts": 1,
     "started_at": "2026-12-07T14:34:07.935321+00:00", "finished_at": "2026-12-07T14:34:08.000000+00:00",
     "result": {"n": 1, "t": "é\x00"}, "duration_ms": 64.68},
    {"name": "charge#2", "status": "succeeded", "error_type": None, "error": None, "attempts": 3,
     "started_at": "2026-12-07T14:34:08.000000+00:00", "finished_at": "2026-12-07T14:34:08.000000+00:00",
     "result": None, "duration_ms": 0.0},
    {"name": "refund", "status": "failed", "error_type": "ValueError", "error": "card 7 declined\nline two",
     "attempts": 2, "started_at": "1999-01-02T03:04:05.000001+00:00",
     "finished_at": "2026-12-07T14:34:07.935321+00:00", "result": None, "duration_ms": 881407802935.32},
    {"name": "nap", "status": "sleep", "error_type": None, "error": None, "attempts": 1,
     "started_at": "2026-12-07T14:34:07.935321+00:00", "finished_at": "1999-01-02T03:04:05.000001+00:00",
     "result": 1796654047.5, "duration_ms": -881407802935.32},
    {"name": "approval", "status": "wait", "error_type": None, "error": None, "attempts": 1,
     "started_at": "2026-12-07T14:34:07.935321+00:00", "finished_at": "2026-12-07T14:34:08.000000+00:00",
     "result": {"since": 1.5, "until": 2.5}, "duration_ms": 64.68},
    {"name": "child", "status": "wait", "error_type": None, "error": None, "attempts": 1,
     "started_at": "2026-12-07T14:34:07.935321+00:00", "finished_at": "2026-12-07T14:34:08.000000+00:00",
     "result": {"since": 1.5, "child": "c"}, "duration_ms": 64.68},
    {"name": "approval", "status": "succeeded", "error_type": None, "error": None, "attempts": 1,
     "started_at": "2026-12-07T14:34:07.935321+00:00", "finished_at": "1999-01-02T03:04:05.000001+00:00",
     "result": {"ok": True}, "duration_ms": -881407802935.32},
    {"name": "child", "status": "failed", "error_type": "ChildFailed", "error": "child run c failed: boom",
     "attempts": 1, "started_at": "2026-12-07T14:34:07.935321+00:00",
     "finished_at": "1999-01-02T03:04:05.000001+00:00", "result": None, "duration_ms": -881407802935.32},
]  # fmt: skip


def test_a_step_record_has_the_tables_columns_and_shows_as_the_step_class_did() -> None:
    assert list(COLUMNS) == [c.name for c in Step.__table__.columns]  # type: ignore[attr-defined]
    assert [record.public() for record in records("r") + outcomes("r")] == SHOWN
