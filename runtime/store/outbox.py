"""The outbox: runs whose record is saved but whose message Redis never took (it could not be reached).

Such a record is marked with version UNSENT (-1): below every version a worker or the reconciler writes,
so any later update of the run wins, and apart from the reconciler's candidates (version 0 or a phase
time), so it is sent from here, not looked for in Redis. The scheduler's leader takes the oldest page,
claiming each record (UNSENT -> a QUEUED phase version) in the same statement, sends their messages,
and puts back what it could not send (runtime/scheduler/outbox.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from runtime.store.runs import PRUNE_CHUNK, RunStore

if TYPE_CHECKING:
    from runtime.store.models import Run

UNSENT = -1
WAITING = ("scheduled", "queued")  # a run cancelled meanwhile is not sent


async def hold(store: RunStore, ids: list[str]) -> None:
    """Mark these just-saved records as unsent (those no one has touched since)."""
    from sqlalchemy import update

    from runtime.store.models import Run

    table = Run.__table__  # type: ignore[attr-defined]
    async with store.engine.begin() as conn:
        for start in range(0, len(ids), PRUNE_CHUNK):
            chunk = ids[start : start + PRUNE_CHUNK]
            await conn.execute(update(table).where(table.c.id.in_(chunk), table.c.version == 0).values(version=UNSENT))


async def take(store: RunStore, limit: int) -> tuple[list[Run], int]:
    """Claim the oldest `limit` unsent runs: returns them and the version they now have."""
    from sqlalchemy import select, update

    from runtime.store.models import Run, as_run

    table = Run.__table__  # type: ignore[attr-defined]
    version = int(time.time() * 1000) * 10  # the QUEUED phase, as the reconciler's requeue writes
    oldest = (
        select(table.c.id)
        .where(table.c.version == UNSENT, table.c.status.in_(WAITING))
        .order_by(table.c.enqueued_at, table.c.id)
        .limit(min(limit, PRUNE_CHUNK))
    )
    async with store.engine.begin() as conn:
        ids = [row[0] for row in (await conn.execute(oldest)).all()]
        if not ids:
            return [], version
        claim = update(table).where(table.c.id.in_(ids), table.c.version == UNSENT).values(version=version)
        await conn.execute(claim)
        query = store.runs().where(table.c.id.in_(ids), table.c.version == version)
        rows = (await conn.execute(query.order_by(table.c.enqueued_at, table.c.id))).mappings().all()
    return [as_run(row) for row in rows], version


async def put_back(store: RunStore, ids: list[str], version: int) -> None:
    """Return claimed runs that could not be sent (Redis was not reached) to the outbox."""
    from sqlalchemy import update

    from runtime.store.models import Run

    table = Run.__table__  # type: ignore[attr-defined]
    async with store.engine.begin() as conn:
        for start in range(0, len(ids), PRUNE_CHUNK):
            chunk = ids[start : start + PRUNE_CHUNK]
            back = update(table).where(table.c.id.in_(chunk), table.c.version == version).values(version=UNSENT)
            await conn.execute(back)
