"""The steps of durable functions in the run store: a run's saved steps read in one query, and a step saved
once (the first outcome saved for a name is the one every later execution of the run gets).

Group commit: the saves of concurrent runs (a worker runs several at once) made in one loop turn, or while
the previous batch is being written, go out together: one INSERT of all their rows, and one SELECT of the
ones another execution saved first; each caller waits for its own step. If the batch fails, every caller in
it gets the error (as a save of its own would have raised it), and its step is not saved.

Steps are StepRecords, written and read as plain SQL and tuples by the run store's driver (runtime/store/step_sql.py);
SQLAlchemy only while tracing is on or where the store has no driver (runtime/store/step_engine.py), so a durable
worker never imports it. The statements are imported when a journal is made (RunStore.steps, on first use): this
module is imported by /metrics for `saved_observers` in every process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runtime import tracing
from runtime.store.sqlite_insert import SqliteInsert

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from runtime.store.postgres_insert import PostgresInsert
    from runtime.store.step_record import StepRecord
    from runtime.store.step_sql import Key

# told of each step saved in this process, by its status (succeeded, failed, wait): /metrics counts them
# (runtime/ops/metrics.py registers itself; this room may not import it)
saved_observers: list[Callable[[str], None]] = []
MAX_ROWS = 100  # steps per INSERT (9 columns: within SQLite's oldest limit of 999 variables)


class StepJournal:
    """Saved steps, by run: `load` when a run's first step is asked for, `save` when a step has its outcome."""

    def __init__(
        self, engine: Callable[[], AsyncEngine], dialect: str, fast: SqliteInsert | PostgresInsert | None = None
    ) -> None:
        from runtime.store.step_sql import StepSql

        self._engine = engine  # the run store's, made (SQLAlchemy imported) only where the engine's path is taken
        self.fast = fast  # the run store's own driver connection, if it has one
        self.sql = StepSql(dialect)
        self.waiting: list[tuple[StepRecord, asyncio.Future[StepRecord]]] = []
        self.writing: asyncio.Task[None] | None = None

    @property
    def engine(self) -> AsyncEngine:
        return self._engine()

    def _driver(self) -> SqliteInsert | PostgresInsert | None:
        return None if tracing.enabled() else self.fast  # traced: the instrumented engine

    async def load(self, run_id: str) -> dict[str, StepRecord]:
        """A run's saved steps, by name."""
        fast = self._driver()
        if fast is None:
            from runtime.store.step_engine import engine_load

            async with self.engine.connect() as conn:
                steps = await engine_load(conn, run_id)
            return {step.name: step for step in steps}
        if isinstance(fast, SqliteInsert):
            raw = await fast.read(self.sql.select_run, (run_id,))
        else:
            raw = await fast.transact(lambda conn: conn.fetch(self.sql.select_run, run_id), self.sql.select_run)
        steps = [self.sql.step(row) for row in raw]
        return {step.name: step for step in steps}

    async def save(self, step: StepRecord) -> StepRecord:
        """Save a step's outcome, unless one is saved for its name already (another execution of the run, on
        a worker that lost its lease, got there first): the saved one is returned, and is the outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StepRecord] = loop.create_future()
        if self.writing is not None and self.writing.get_loop() is not loop:  # a store used by a new loop
            self.writing, self.waiting = None, []
        self.waiting.append((step, future))
        if self.writing is None or self.writing.done():
            self.writing = asyncio.create_task(self._write())
        return await future

    async def _write(self) -> None:
        batch: list[tuple[StepRecord, asyncio.Future[StepRecord]]] = []
        try:
            await asyncio.sleep(0)  # let this loop turn's other saves join the batch
            while self.waiting:
                batch, self.waiting = self.waiting[:MAX_ROWS], self.waiting[MAX_ROWS:]
                try:
                    saved = await self._save_all([step for step, _ in batch])
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():  # its caller may have been cancelled
                            future.set_exception(exc)
                    continue
                for (_, future), step in zip(batch, saved, strict=True):
                    if not future.done():
                        future.set_result(step)
                batch = []
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            for _, future in batch + self.waiting:
                future.cancel()
            self.waiting = []
            raise

    async def _save_all(self, steps: list[StepRecord]) -> list[StepRecord]:
        """Save these steps in one transaction: each caller's outcome, in order (a name saved twice in the
        batch: the first one's)."""
        unique = list({(s.run_id, s.name): s for s in reversed(steps)}.values())[::-1]  # first of each key
        fast = self._driver()
        if fast is None:
            from runtime.store.step_engine import engine_save

            async with self.engine.begin() as conn:
                inserted, lost = await engine_save(conn, unique)
        elif isinstance(fast, SqliteInsert):
            inserted, lost = await fast.transact(lambda conn: self._sqlite_save(conn, unique), True, "steps")
        else:
            inserted, lost = await fast.transact(lambda conn: self._postgres_save(conn, unique), "steps")
        mine = {(s.run_id, s.name): s for s in unique}
        for key in inserted:
            for observe in saved_observers:
                observe(mine[key].status)
        out = []
        for step in steps:
            key = (step.run_id, step.name)
            out.append(mine[key] if key in inserted else lost.get(key, step))
        return out

    def _sqlite_save(self, conn: Any, steps: list[StepRecord]) -> tuple[set[Key], dict[Key, StepRecord]]:
        from runtime.store.step_sql import lost_keys

        inserted = {(r, n) for r, n in conn.execute(self.sql.insert(len(steps)), self.sql.values(steps)).fetchall()}
        runs, names = lost_keys(steps, inserted)
        lost: dict[Key, StepRecord] = {}
        if runs:
            for row in conn.execute(self.sql.select_keys(len(runs), len(names)), [*runs, *names]).fetchall():
                found = self.sql.step(row)
                lost[(found.run_id, found.name)] = found
        return inserted, lost

    async def _postgres_save(self, conn: Any, steps: list[StepRecord]) -> tuple[set[Key], dict[Key, StepRecord]]:
        # one statement commits by itself; a row saved is never changed by a save, so the SELECT of the ones
        # that lost needs no transaction around both (and a retry on a new connection finds its own rows)
        from runtime.store.step_sql import lost_keys

        rows = await conn.fetch(self.sql.insert(len(steps)), *self.sql.values(steps))
        inserted = {(row[0], row[1]) for row in rows}
        runs, names = lost_keys(steps, inserted)
        lost: dict[Key, StepRecord] = {}
        if runs:
            for row in await conn.fetch(self.sql.select_keys(len(runs), len(names)), *runs, *names):
                found = self.sql.step(row)
                lost[(found.run_id, found.name)] = found
        return inserted, lost

    async def resolve(self, step: StepRecord) -> StepRecord:
        """Give a wait its outcome (an event's data or none, a child run's result or failure): the row saved
        when it began takes it, once; the outcome saved first is returned."""
        fast = self._driver()
        if fast is None:
            from runtime.store.step_engine import engine_resolve

            async with self.engine.begin() as conn:
                found = await engine_resolve(conn, step)
            return found if found is not None else step
        values = self.sql.resolve_values(step)
        sql = self.sql
        if isinstance(fast, SqliteInsert):

            def resolve(conn: Any) -> Any:
                row = conn.execute(sql.resolve, values).fetchone()
                return row if row is not None else conn.execute(sql.select_one, values[-2:]).fetchone()

            row = await fast.transact(resolve, True, sql.resolve)
        else:

            async def resolve_pg(conn: Any) -> Any:
                row = await conn.fetchrow(sql.resolve, *values)
                return row if row is not None else await conn.fetchrow(sql.select_one, *values[-2:])

            row = await fast.transact(resolve_pg, sql.resolve)
        return self.sql.step(row) if row is not None else step

    async def of_run(self, run_id: str) -> list[dict[str, Any]]:
        """A run's steps as the inspector and the API show them, in the order they finished."""
        steps = sorted((await self.load(run_id)).values(), key=lambda s: (s.finished_at, s.name))
        return [s.public() for s in steps]
