"""The steps table's statements as SQL text and its rows as plain tuples, run by the driver the run store's enqueue
insert uses (runtime/store/sqlite_insert.py, runtime/store/postgres_insert.py), with no SQLAlchemy: a durable
worker saves its first step without importing it (~0.2 s with its event loop held), and a batch pays no bind or
result processors but SQLite's DateTime, done here as SQLAlchemy does it (text with microseconds). The engine's
own path, for tracing and a database with no such driver, is runtime/store/step_engine.py; both write the same
rows (tests/runtime/store/test_step_sql.py).

Through the engine a step's save cost a transaction of its own: the pool checkout, greenlet switches and
aiosqlite's thread hops for BEGIN, the INSERT and COMMIT, about 1 ms of CPU, most of the run's. Here a batch
of saves is one INSERT of all its rows (ON CONFLICT DO NOTHING RETURNING the keys it inserted) and, only if
some lost the race, one SELECT of those; the statements are written once per batch size.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from runtime.store.sqlite_insert import sqlite_datetime
from runtime.store.step_record import COLUMNS, StepRecord

Key = tuple[str, str]  # (run_id, name)
RESOLVED = ("status", "result", "error_type", "error", "finished_at")  # what a wait's outcome sets
TIMES = ("started_at", "finished_at")


def _sqlite_time(value: Any) -> str | None:
    """A datetime as SQLAlchemy's SQLite DateTime binds it; anything else refused as that type refuses it."""
    if value is None or type(value) is datetime:
        return sqlite_datetime(value)
    raise TypeError("SQLite DateTime type only accepts Python datetime and date objects as input.")


def _sqlite_read_time(value: Any) -> Any:
    """SQLite's DateTime text (`2026-12-07 14:34:07.935321`) as the naive datetime SQLAlchemy reads it."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class StepSql:
    """The statements for "sqlite" (`?`, for sqlite3) or "postgresql" (`$n`, for asyncpg), and a step's values."""

    def __init__(self, dialect: str) -> None:
        self.sqlite = dialect == "sqlite"
        # where each column's value goes through a bind (and, read, a result) step: SQLite's DateTime only
        self.times = [i for i, name in enumerate(COLUMNS) if name in TIMES] if self.sqlite else []
        self.resolved_times = [i for i, name in enumerate(RESOLVED) if name in TIMES] if self.sqlite else []
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

    def values(self, steps: Iterable[StepRecord]) -> list[Any]:
        """The steps' values in the INSERT's order, bound as SQLAlchemy binds them."""
        out: list[Any] = []
        for step in steps:
            row = [getattr(step, name) for name in COLUMNS]
            for i in self.times:
                row[i] = _sqlite_time(row[i])
            out += row
        return out

    def resolve_values(self, step: StepRecord) -> list[Any]:
        """The UPDATE's values: the wait's outcome, then its key."""
        out = [getattr(step, name) for name in RESOLVED]
        for i in self.resolved_times:
            out[i] = _sqlite_time(out[i])
        return [*out, step.run_id, step.name]

    def step(self, row: Iterable[Any]) -> StepRecord:
        """A step from a raw row of COLUMNS."""
        values = list(row)
        for i in self.times:
            values[i] = _sqlite_read_time(values[i])
        return StepRecord(**dict(zip(COLUMNS, values, strict=True)))


def lost_keys(steps: list[StepRecord], inserted: set[Key]) -> tuple[list[str], list[str]]:
    """The run ids and names of the steps that were not inserted (each once)."""
    lost = [s for s in steps if (s.run_id, s.name) not in inserted]
    return list(dict.fromkeys(s.run_id for s in lost)), list(dict.fromkeys(s.name for s in lost))
