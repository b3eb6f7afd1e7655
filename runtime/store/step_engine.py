"""The steps table's statements through SQLAlchemy's engine: used while tracing is on (so they show as database
spans) and on a database that has no driver of its own here (SQLite in memory). They write the rows the driver's
statements (runtime/store/step_sql.py) write, and read them as the same StepRecord."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from runtime.store.models import Step
from runtime.store.step_record import StepRecord
from runtime.store.step_sql import RESOLVED, Key, lost_keys

TABLE = Step.__table__  # type: ignore[attr-defined]


def dialect_insert(dialect: str) -> Any:
    """`insert` of the database's dialect (for its ON CONFLICT), importing only that one: a process on SQLite
    never loads SQLAlchemy's Postgres dialect, nor one on Postgres SQLite's."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    return postgresql_insert


def _record(row: Any) -> StepRecord:
    return StepRecord(**dict(row))


async def engine_load(conn: AsyncConnection, run_id: str) -> list[StepRecord]:
    """A run's saved steps."""
    rows = (await conn.execute(select(TABLE).where(TABLE.c.run_id == run_id))).mappings().all()
    return [_record(row) for row in rows]


async def engine_save(conn: AsyncConnection, steps: list[StepRecord]) -> tuple[set[Key], dict[Key, StepRecord]]:
    """The batch's INSERT and SELECT (in the transaction `conn` is in)."""
    statement = (
        dialect_insert(conn.dialect.name)(TABLE)
        .values([s.as_dict() for s in steps])
        .on_conflict_do_nothing(index_elements=["run_id", "name"])
        .returning(TABLE.c.run_id, TABLE.c.name)
    )
    inserted = {(r, n) for r, n in (await conn.execute(statement)).all()}
    runs, names = lost_keys(steps, inserted)
    lost: dict[Key, StepRecord] = {}
    if runs:
        found = await conn.execute(select(TABLE).where(TABLE.c.run_id.in_(runs), TABLE.c.name.in_(names)))
        lost = {(row["run_id"], row["name"]): _record(row) for row in found.mappings()}
    return inserted, lost


async def engine_resolve(conn: AsyncConnection, step: StepRecord) -> StepRecord | None:
    """A wait's outcome given once (the UPDATE), else the outcome saved first (the SELECT); None if no row."""
    where = (TABLE.c.run_id == step.run_id, TABLE.c.name == step.name)
    statement = (
        update(TABLE)
        .where(*where, TABLE.c.status == "wait")
        .values({name: getattr(step, name) for name in RESOLVED})
        .returning(*TABLE.c)
    )
    row = (await conn.execute(statement)).mappings().first()
    if row is None:
        row = (await conn.execute(select(TABLE).where(*where))).mappings().first()
    return None if row is None else _record(row)
