"""Counting runs per function and status without scanning `runs`: the triggers that append each change to
`run_counts`, and the run store's counts (folded now and then) and its counts of finished runs."""

from __future__ import annotations

import asyncio
import builtins
import logging
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from runtime import tracing
from runtime.store.bulk_counts import COUNTED
from runtime.store.sqlite_insert import SqliteInsert
from runtime.store.values import FINAL, database_errors, iso, utcnow

if TYPE_CHECKING:
    from sqlalchemy import Connection
    from sqlalchemy.ext.asyncio import AsyncEngine

    from runtime.store.postgres_insert import PostgresInsert

logger = logging.getLogger("runtime.runs")

_COUNT = "INSERT INTO run_counts (function, status, n) VALUES"
# Postgres: an insert is counted by a row trigger, unless its transaction counts its runs itself (runs.counted: a
# bulk enqueue, runtime/store/postgres_insert.py, one row per function and status where the trigger wrote one per
# run). Tested in the function, not in the trigger's WHEN: a single enqueue costs the database ~1-2 µs more than
# with no test (a WHEN ~5 µs, a statement trigger over the insert's new table ~5 µs and ~7 µs on every worker upsert
# that inserts nothing: bench/insert_counting.py), for ~1 µs a bulk's run (the function called for nothing).
_COUNT_UNLESS_COUNTED = f"""CREATE OR REPLACE FUNCTION runs_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('{COUNTED}', true) IS DISTINCT FROM 'on' THEN
        {_COUNT} (NEW.function, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$"""
_INSERT_TRIGGER = "CREATE TRIGGER runs_count AFTER INSERT ON runs FOR EACH ROW EXECUTE FUNCTION runs_count()"
POSTGRES_INSERT_UNLESS_COUNTED = (_COUNT_UNLESS_COUNTED, _INSERT_TRIGGER)
# 0007's: every insert counted by the row trigger
POSTGRES_INSERT_BY_ROW = (
    f"""CREATE OR REPLACE FUNCTION runs_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_COUNT} (NEW.function, NEW.status, 1);
    RETURN NULL;
END $$""",
    _INSERT_TRIGGER,
)
# runs change and go in batches (a worker's upsert, a retention delete): counted once a statement, from its
# transition tables (~30% less database CPU for a worker's batch of 10 than a trigger per row)
POSTGRES_CHANGES = (
    """CREATE OR REPLACE FUNCTION runs_count_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        INSERT INTO run_counts (function, status, n) SELECT function, status, -COUNT(*) FROM old_runs
        GROUP BY function, status;
    ELSE
        INSERT INTO run_counts (function, status, n)
        SELECT function, status, SUM(n) FROM (
            SELECT was.function, was.status, -1 AS n FROM old_runs was JOIN new_runs became USING (id)
            WHERE was.status IS DISTINCT FROM became.status OR was.function IS DISTINCT FROM became.function
            UNION ALL
            SELECT became.function, became.status, 1 FROM old_runs was JOIN new_runs became USING (id)
            WHERE was.status IS DISTINCT FROM became.status OR was.function IS DISTINCT FROM became.function
        ) AS changes GROUP BY function, status HAVING SUM(n) <> 0;
    END IF;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER runs_count_update AFTER UPDATE ON runs REFERENCING OLD TABLE AS old_runs NEW TABLE AS new_runs"
    " FOR EACH STATEMENT EXECUTE FUNCTION runs_count_changes()",
    "CREATE TRIGGER runs_count_delete AFTER DELETE ON runs REFERENCING OLD TABLE AS old_runs"
    " FOR EACH STATEMENT EXECUTE FUNCTION runs_count_changes()",
)
COUNT_TRIGGERS = {
    "sqlite": (
        f"CREATE TRIGGER runs_count_insert AFTER INSERT ON runs BEGIN {_COUNT} (NEW.function, NEW.status, 1); END",
        "CREATE TRIGGER runs_count_update AFTER UPDATE OF function, status ON runs"
        " WHEN OLD.status IS NOT NEW.status OR OLD.function IS NOT NEW.function"
        f" BEGIN {_COUNT} (OLD.function, OLD.status, -1), (NEW.function, NEW.status, 1); END",
        f"CREATE TRIGGER runs_count_delete AFTER DELETE ON runs BEGIN {_COUNT} (OLD.function, OLD.status, -1); END",
    ),
    "postgresql": (*POSTGRES_INSERT_UNLESS_COUNTED, *POSTGRES_CHANGES),
}
DROP_COUNT_TRIGGERS = {
    "sqlite": tuple(f"DROP TRIGGER IF EXISTS runs_count_{op}" for op in ("insert", "update", "delete")),
    "postgresql": (
        *(f"DROP TRIGGER IF EXISTS runs_count{op} ON runs" for op in ("", "_update", "_delete")),
        "DROP FUNCTION IF EXISTS runs_count()",
        "DROP FUNCTION IF EXISTS runs_count_changes()",
    ),
}
_COUNTS = "SELECT function, status, sum(n) FROM run_counts GROUP BY function, status"
COUNT_ALL = (
    "INSERT INTO run_counts (function, status, n) SELECT function, status, COUNT(*) FROM runs GROUP BY function, status"
)
FOLD_EVERY = 5.0  # seconds between a writer's folds of run_counts
_FOLD_POSTGRES = (
    "WITH gone AS (DELETE FROM run_counts RETURNING function, status, n) "
    "INSERT INTO run_counts (function, status, n) "
    "SELECT function, status, SUM(n) FROM gone GROUP BY function, status HAVING SUM(n) <> 0"
)
_LAST = "SELECT MAX(id) FROM run_counts"
_FOLD_SQLITE = (  # the rows up to the last one, in the transaction that read it
    "INSERT INTO run_counts (function, status, n) SELECT function, status, SUM(n) FROM run_counts"
    " WHERE id <= ? GROUP BY function, status HAVING SUM(n) <> 0",
    "DELETE FROM run_counts WHERE id <= ?",
)


def _fold_sqlite(conn: sqlite3.Connection) -> None:
    """SQLite's fold, in the write transaction SqliteInsert.transact opened."""
    (last,) = conn.execute(_LAST).fetchone()
    if last is not None:
        for statement in _FOLD_SQLITE:
            conn.execute(statement, (last,))


def count_runs_from_now_on(conn: Connection) -> None:
    """Create the triggers that keep `run_counts` and count the runs already there. In one transaction
    with the triggers, no write falls between the two."""
    for statement in COUNT_TRIGGERS[conn.dialect.name]:
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql("DELETE FROM run_counts")  # left by a `runs` table dropped by hand, say
    conn.exec_driver_sql(COUNT_ALL)


class RunCounting:
    """What `RunStore` counts: runs per function and status from `run_counts`, whose rows it folds now and
    then, and the runs finished per minute and per queue."""

    is_sqlite: bool
    fast_insert: SqliteInsert | PostgresInsert | None
    _fold_due: float  # see fold_counts_now_and_then
    _folding: asyncio.Task[None] | None

    @property
    def engine(self) -> AsyncEngine:  # RunStore's
        raise NotImplementedError

    async def counts(self) -> dict[str, dict[str, int]]:
        """Runs per function and status: {function: {status: n}}, summed from `run_counts` (the rows
        written since the last fold, and one per function and status before it). By the store's driver where it
        has one (a worker's /metrics scrape imports no SQLAlchemy), through the engine while tracing is on."""
        self.fold_counts_now_and_then()
        fast = None if tracing.enabled() else self.fast_insert
        rows: Iterable[Sequence[Any]]
        if isinstance(fast, SqliteInsert):
            rows = await fast.read(_COUNTS, ())
        elif fast is not None:
            rows = await fast.transact(lambda conn: conn.fetch(_COUNTS), _COUNTS)
        else:
            async with self.engine.connect() as conn:
                rows = (await conn.exec_driver_sql(_COUNTS)).all()
        out: dict[str, dict[str, int]] = {}
        for function, status, count in rows:
            if count:  # a function whose runs were all deleted, a status no run has any more
                out.setdefault(function, {})[status] = int(count)
        return out

    async def fold_counts(self) -> None:
        """Sum `run_counts` into one row per function and status. On Postgres in one statement, which
        deletes only the rows its snapshot sees (a concurrent writer's rows stay for the next fold); on
        SQLite with the write lock held from the start. By the store's driver where it has one (a worker folds
        without SQLAlchemy), through the engine while tracing is on."""
        fast = None if tracing.enabled() else self.fast_insert
        if isinstance(fast, SqliteInsert):
            await fast.transact(_fold_sqlite, False, _FOLD_SQLITE[0])  # on its thread: the fold may be long
            return
        if fast is not None:
            await fast.transact(lambda conn: conn.execute(_FOLD_POSTGRES), _FOLD_POSTGRES)
            return
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.exec_driver_sql(_FOLD_POSTGRES)
                return
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            last = (await conn.exec_driver_sql(_LAST)).scalar()
            if last is not None:
                for statement in _FOLD_SQLITE:
                    await conn.exec_driver_sql(statement, (last,))

    def fold_counts_now_and_then(self) -> None:
        """Start a fold of `run_counts` in the background if this process has not folded for FOLD_EVERY
        seconds (no enqueue or worker batch waits on it). A fold that fails is logged: the rows stay and are
        summed all the same, and the next fold takes them."""
        now = time.monotonic()
        if now < self._fold_due or (self._folding is not None and not self._folding.done()):
            return
        self._fold_due = now + FOLD_EVERY
        self._folding = asyncio.create_task(self._fold_logged())

    async def _fold_logged(self) -> None:
        try:
            await self.fold_counts()
        except database_errors() as exc:
            logger.warning("cannot fold the run counts: %s", exc)

    async def throughput(self, minutes: int = 60, now: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """Runs finished per minute over the last `minutes` (oldest first, every minute present):
        [{"minute": "2026-01-01T10:04:00.000000+00:00", "succeeded": n, "failed": n, "cancelled": n}]. Counted from
        `finished_at`."""
        from sqlalchemy import select

        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        end = (now or utcnow()).replace(second=0, microsecond=0)
        start = end - timedelta(minutes=minutes - 1)
        buckets = {start + timedelta(minutes=i): dict.fromkeys(FINAL, 0) for i in range(minutes)}
        # on finished_at alone: given the status too, a SQLite store never ANALYZEd takes the status index
        # and reads nearly every run
        query = select(table.c.finished_at, table.c.status).where(table.c.finished_at >= start)
        async with self.engine.connect() as conn:
            for finished_at, status in (await conn.execute(query)).all():
                bucket = buckets.get(finished_at.replace(second=0, microsecond=0))
                if bucket is not None and status in bucket:  # final statuses only, as before
                    bucket[status] += 1
        return [{"minute": iso(minute), **counts} for minute, counts in buckets.items()]

    async def finished_counts(self, since: datetime) -> dict[str, dict[str, int]]:
        """Runs that finished at or after `since`, per queue and status: {queue: {status: n}}."""
        from sqlalchemy import func, select

        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        query = (
            select(table.c.queue, table.c.status, func.count())
            .where(table.c.finished_at >= since)
            .group_by(table.c.queue, table.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for queue, status, count in (await conn.execute(query)).all():
                out.setdefault(queue, {})[status] = count
        return out

    async def finished_per_minute(
        self, queues: builtins.list[str], minutes: int = 60, now: datetime | None = None
    ) -> dict[str, builtins.list[dict[str, Any]]]:
        """Per queue (each of `queues`, and any other that has some), the runs that ended by running, per minute
        over the last `minutes` (oldest first, every minute present): {queue: [{"minute": iso, "processed": n,
        "failed": n}]}, processed counting the succeeded and failed ones (not the cancelled). Grouped in the
        database by `finished_at`'s minute, so a busy hour reads back a few rows per minute, not every run."""
        from sqlalchemy import func, literal_column, select

        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        end = (now or utcnow()).replace(second=0, microsecond=0)
        start = end - timedelta(minutes=minutes - 1)
        if self.engine.dialect.name == "sqlite":  # its DateTime is text: 'YYYY-MM-DD HH:MM:SS.ffffff'
            minute = func.strftime(literal_column("'%Y-%m-%d %H:%M'"), table.c.finished_at)
        else:  # literal, not bound: the SELECT's and the GROUP BY's expressions must be the same text
            minute = func.date_trunc(literal_column("'minute'"), table.c.finished_at)
        # filtered on finished_at alone, as in `throughput`, so the planner takes its index
        query = (
            select(table.c.queue, minute, table.c.status, func.count())
            .where(table.c.finished_at >= start)
            .group_by(table.c.queue, minute, table.c.status)
        )

        def empty() -> dict[datetime, dict[str, int]]:
            return {start + timedelta(minutes=i): {"processed": 0, "failed": 0} for i in range(minutes)}

        out = {queue: empty() for queue in queues}
        async with self.engine.connect() as conn:
            for queue, when, status, count in (await conn.execute(query)).all():
                if status not in ("succeeded", "failed"):
                    continue
                at = datetime.fromisoformat(when) if isinstance(when, str) else when.replace(tzinfo=None)
                if not start <= at <= end:
                    continue
                per = out.setdefault(queue, empty())
                per[at]["processed"] += count
                per[at]["failed"] += count if status == "failed" else 0
        return {queue: [{"minute": iso(at), **counts} for at, counts in per.items()] for queue, per in out.items()}
