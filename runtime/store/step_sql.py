"""The steps table's statements, run by the driver the run store's enqueue insert uses (runtime/store/sqlite_insert.py,
runtime/store/postgres_insert.py), or by the engine while tracing is on (so they show as database spans) and on
a database that has no such driver (SQLite in memory).

Through the engine a step's save cost a transaction of its own: the pool checkout, greenlet switches and
aiosqlite's thread hops for BEGIN, the INSERT and COMMIT, about 1 ms of CPU, most of the run's. Here a batch
of saves is one INSERT of all its rows (ON CONFLICT DO NOTHING RETURNING the keys it inserted) and, only if
some lost the race, one SELECT of those; the statements are written once per batch size, and values go
through the bind and result processors SQLAlchemy would apply, so the rows are the same either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from runtime.store.models import Step

Key = tuple[str, str]  # (run_id, name)
TABLE = Step.__table__  # type: ignore[attr-defined]
COLUMNS = [c.name for c in TABLE.columns]
RESOLVED = ("status", "result", "error_type", "error", "finished_at")  # what a wait's outcome sets


def dialect_insert(dialect: str) -> Any:
    """`insert` of the database's dialect (for its ON CONFLICT), importing only that one: a worker on SQLite
    never loads SQLAlchemy's Postgres dialect, nor one on Postgres SQLite's."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    from sqlalchemy.dialects.postgresql import insert as postgresql_insert

    return postgresql_insert


class StepSql:
    """The statements for one dialect (`?` for sqlite3, `$n` for asyncpg) and the value processors."""

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"
        self.binds: dict[str, Callable[[Any], Any] | None] = {
            c.name: c.type._cached_bind_processor(dialect) for c in TABLE.columns
        }
        self.results: list[Callable[[Any], Any] | None] = [
            c.type._cached_result_processor(dialect, None) for c in TABLE.columns
        ]
        cols = ", ".join(COLUMNS)
        self.select_run = f"SELECT {cols} FROM steps WHERE run_id = {self._p(1)}"
        sets = ", ".join(f"{name} = {self._p(i)}" for i, name in enumerate(RESOLVED, 1))
        n = len(RESOLVED)
        self.resolve = (
            f"UPDATE steps SET {sets} WHERE run_id = {self._p(n + 1)} AND name = {self._p(n + 2)} "
            f"AND status = 'wait' RETURNING {cols}"
        )
        self.select_one = f"SELECT {cols} FROM steps WHERE run_id = {self._p(1)} AND name = {self._p(2)}"

    def _p(self, i: int) -> str:
        return "?" if self.sqlite else f"${i}"

    @functools.cache  # noqa: B019  (one StepSql per store, a few batch sizes)
    def insert(self, rows: int) -> str:
        """INSERT of `rows` rows, the ones already saved left as they are; returns the keys it inserted."""
        width = len(COLUMNS)
        values = ", ".join("(" + ", ".join(self._p(r * width + c + 1) for c in range(width)) + ")" for r in range(rows))
        return (
            f"INSERT INTO steps ({', '.join(COLUMNS)}) VALUES {values} "
            "ON CONFLICT (run_id, name) DO NOTHING RETURNING run_id, name"
        )

    @functools.cache  # noqa: B019
    def select_keys(self, runs: int, names: int) -> str:
        """SELECT of the rows whose run is one of `runs` ids and name one of `names` (pairs filtered after)."""
        ids = ", ".join(self._p(i + 1) for i in range(runs))
        keys = ", ".join(self._p(runs + i + 1) for i in range(names))
        return f"SELECT {', '.join(COLUMNS)} FROM steps WHERE run_id IN ({ids}) AND name IN ({keys})"

    def values(self, steps: Iterable[Step]) -> list[Any]:
        """The steps' values in the INSERT's order, bound as SQLAlchemy binds them."""
        out: list[Any] = []
        for step in steps:
            for name in COLUMNS:
                value, bind = getattr(step, name), self.binds[name]
                out.append(bind(value) if bind is not None else value)
        return out

    def resolve_values(self, step: Step) -> list[Any]:
        out = []
        for name in RESOLVED:
            value, bind = getattr(step, name), self.binds[name]
            out.append(bind(value) if bind is not None else value)
        return [*out, step.run_id, step.name]

    def step(self, row: Iterable[Any]) -> Step:
        """A Step from a raw row of COLUMNS."""
        return Step.model_validate(
            {
                name: (process(value) if process is not None and value is not None else value)
                for name, process, value in zip(COLUMNS, self.results, row, strict=True)
            }
        )


def lost_keys(steps: list[Step], inserted: set[Key]) -> tuple[list[str], list[str]]:
    """The run ids and names of the steps that were not inserted (each once)."""
    lost = [s for s in steps if (s.run_id, s.name) not in inserted]
    return list(dict.fromkeys(s.run_id for s in lost)), list(dict.fromkeys(s.name for s in lost))


async def engine_save(conn: AsyncConnection, steps: list[Step]) -> tuple[set[Key], dict[Key, Step]]:
    """The batch's INSERT and SELECT through the engine (in the transaction `conn` is in)."""
    statement = (
        dialect_insert(conn.dialect.name)(TABLE)
        .values([s.model_dump() for s in steps])
        .on_conflict_do_nothing(index_elements=["run_id", "name"])
        .returning(TABLE.c.run_id, TABLE.c.name)
    )
    inserted = {(r, n) for r, n in (await conn.execute(statement)).all()}
    runs, names = lost_keys(steps, inserted)
    lost: dict[Key, Step] = {}
    if runs:
        found = await conn.execute(select(TABLE).where(TABLE.c.run_id.in_(runs), TABLE.c.name.in_(names)))
        lost = {(row["run_id"], row["name"]): Step.model_validate(dict(row)) for row in found.mappings()}
    return inserted, lost


async def engine_resolve(conn: AsyncConnection, step: Step) -> Step | None:
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
    return None if row is None else Step.model_validate(dict(row))
