"""The steps of durable functions in the run store: a run's saved steps read in one query, and a step saved
once (the first outcome saved for a name is the one every later execution of the run gets)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from runtime.store.models import Step

# told of each step saved in this process, by its status (succeeded, failed, wait): /metrics counts them
# (runtime/ops/metrics.py registers itself; this room may not import it)
saved_observers: list[Callable[[str], None]] = []


class StepJournal:
    """Saved steps, by run: `load` when a run's first step is asked for, `save` when a step has its outcome."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        insert = sqlite_insert if engine.dialect.name == "sqlite" else postgresql_insert
        self._insert = insert(Step.__table__).on_conflict_do_nothing(  # type: ignore[attr-defined]
            index_elements=["run_id", "name"]
        )

    async def load(self, run_id: str) -> dict[str, Step]:
        """A run's saved steps, by name."""
        table = Step.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(table).where(table.c.run_id == run_id))).mappings().all()
        return {row["name"]: Step.model_validate(dict(row)) for row in rows}

    async def save(self, step: Step) -> Step:
        """Save a step's outcome, unless one is saved for its name already (another execution of the run, on
        a worker that lost its lease, got there first): the saved one is returned, and is the outcome."""
        table = Step.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            inserted = await conn.execute(self._insert, [step.model_dump()])
            if inserted.rowcount == 1:
                for observe in saved_observers:
                    observe(step.status)
                return step
            row = (
                (await conn.execute(select(table).where(table.c.run_id == step.run_id, table.c.name == step.name)))
                .mappings()
                .first()
            )
        return Step.model_validate(dict(row)) if row is not None else step

    async def resolve(self, step: Step) -> Step:
        """Give a wait its outcome (an event's data or none, a child run's result or failure): the row saved
        when it began takes it, once; the outcome saved first is returned."""
        table = Step.__table__  # type: ignore[attr-defined]
        where = (table.c.run_id == step.run_id, table.c.name == step.name)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(table)
                .where(*where, table.c.status == "wait")
                .values(
                    status=step.status,
                    result=step.result,
                    error_type=step.error_type,
                    error=step.error,
                    finished_at=step.finished_at,
                )
            )
            row = (await conn.execute(select(table).where(*where))).mappings().first()
        return Step.model_validate(dict(row)) if row is not None else step

    async def of_run(self, run_id: str) -> list[dict[str, Any]]:
        """A run's steps as the inspector and the API show them, in the order they finished."""
        steps = sorted((await self.load(run_id)).values(), key=lambda s: (s.finished_at, s.name))
        return [s.public() for s in steps]
