"""The reconciler: settles run records whose message is gone from Redis (a lost enqueue, a Redis that
lost writes on a crash), so no run stays `queued` forever. The scheduler's leader runs one pass every
RECONCILE_SECONDS.

A candidate is a record in `scheduled`/`queued`/`running`/`retrying` untouched for `grace` seconds
(2 x LEASE_SECONDS: longer than a live worker leaves a held run's message unrenewed). A pass reads the
flow-control waiting lists, the delayed set, then the stream (in pages, from the start; acked entries are
deleted, so the stream holds only unfinished work), twice for a candidate not found, and requeues each
candidate found nowhere, if its record is still the one
it read (same version): a run that moved on meanwhile is left alone. A requeued run gets a fresh
message with the same run id: the same attempt for a run lost while `queued` or `running` (as a
reclaim would), the next one for a run lost while `retrying`; a run whose function left the manifest,
or whose attempts are spent, is marked `failed` with the reason instead (and its parent, for a child run of
`ctx.invoke`, told so).

Cost: a pass with candidates reads the whole delayed set and the stream up to the point where every
candidate is found, O(backlog) in Redis reads of `page` entries each; a pass with no candidates is one
indexed query. Candidates are paged (`limit` a pass, oldest first, resuming after the last one seen),
so a lost run is settled within grace + RECONCILE_SECONDS x ceil(candidates / limit).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from runtime.app.parents import tell_parent
from runtime.store.values import from_timestamp, utcnow

if TYPE_CHECKING:
    from runtime.app.connections import Runtime
    from runtime.store.models import Run

logger = logging.getLogger("runtime.reconciler")

UNFINISHED = ("scheduled", "queued", "running", "retrying", "waiting")


def _task_id(data: Any) -> str | None:
    try:
        value = orjson.loads(data)["task_id"]
    except Exception:
        return None
    return value if isinstance(value, str) else None


class Reconciler:
    def __init__(self, runtime: Runtime, *, grace: float | None = None, limit: int = 500, page: int = 1000) -> None:
        self.runtime = runtime
        self.redis = runtime.broker.redis
        self.keys = runtime.keys
        self.grace = grace if grace is not None else 2 * runtime.settings.lease_seconds
        self.limit = limit
        self.page = page
        self.cursor: tuple[datetime, str] | None = None  # (enqueued_at, id) of the last candidate seen

    async def candidates(self) -> list[Run]:
        """Unfinished records untouched for `grace` seconds, oldest first, after the cursor."""
        from sqlalchemy import and_, or_, tuple_  # not before the scheduler's first pass, nor the SQLModel classes

        from runtime.store.models import Run, as_run

        table = Run.__table__  # type: ignore[attr-defined]
        cutoff = time.time() - self.grace
        stale = or_(
            and_(table.c.version == 0, table.c.enqueued_at < from_timestamp(cutoff)),
            and_(table.c.version > 0, table.c.version < int(cutoff * 1000) * 10),
        )
        query = self.runtime.store.runs().where(table.c.status.in_(UNFINISHED), stale)
        if self.cursor is not None:
            query = query.where(tuple_(table.c.enqueued_at, table.c.id) > tuple_(*self.cursor))
        query = query.order_by(table.c.enqueued_at, table.c.id).limit(self.limit)
        async with self.runtime.store.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        runs = [as_run(row) for row in rows]
        self.cursor = (runs[-1].enqueued_at, runs[-1].id) if len(runs) == self.limit else None
        return runs

    async def queued_ids(self, wanted: set[str]) -> set[str]:
        """Which of `wanted` have a message waiting for a concurrency slot (runtime/flow/gate.py), in the delayed
        set or in the stream (pending ones included)."""
        found: set[str] = set()
        for waiting in await self.redis.smembers(self.keys.flow("waiting")):
            for item in await self.redis.lrange(waiting, 0, -1):
                data = item if isinstance(item, bytes) else str(item).encode()
                run_id = _task_id(data.partition(b"\n")[2])
                if run_id is not None and run_id in wanted:
                    found.add(run_id)
        for queue in self.runtime.app.manifest.queue_names():
            keys = self.keys.queue(queue)
            for member in await self.redis.zrange(keys.delayed, 0, -1):
                run_id = _task_id(member)
                if run_id is not None and run_id in wanted:
                    found.add(run_id)
            start = "-"
            while found != wanted:
                entries: Any = await self.redis.xrange(keys.stream, min=start, count=self.page)
                for _entry_id, fields in entries or []:
                    run_id = _task_id((fields or {}).get(b"data"))
                    if run_id is not None and run_id in wanted:
                        found.add(run_id)
                if not entries or len(entries) < self.page:
                    break
                last = entries[-1][0]
                start = "(" + (last.decode() if isinstance(last, bytes) else last)
        return found

    async def reconcile(self) -> list[str]:
        """One pass: returns the ids of the runs it settled (requeued or failed)."""
        runs = await self.candidates()
        if not runs:
            return []
        wanted = {run.id for run in runs}
        present = await self.queued_ids(wanted)
        if present != wanted:  # once more for those not found: a run parked between two reads was in neither
            present |= await self.queued_ids(wanted - present)
        settled = []
        for run in runs:
            if run.id not in present and await self._settle(run):
                settled.append(run.id)
        return settled

    async def _settle(self, run: Run) -> bool:
        fn = self.runtime.app.tasks.get(run.function)
        attempt = run.attempts + 1 if run.status == "retrying" or run.attempts == 0 else run.attempts
        reason = None
        if fn is None:
            reason = f"function '{run.function}' is no longer in the manifest; restore it, then replay this run"
        elif attempt > run.max_attempts:
            reason = f"lost by Redis after its last attempt ({run.last_error or 'no error recorded'})"
        from sqlalchemy import update

        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        new_version = int(time.time() * 1000) * 10  # the QUEUED phase: any later worker update wins
        values: dict[str, Any] = {"version": new_version}
        if reason is None:
            values |= {"status": "queued"}
        else:
            values |= {"status": "failed", "last_error": reason, "finished_at": utcnow()}
        claim = update(table).where(table.c.id == run.id, table.c.version == run.version).values(**values)
        async with self.runtime.store.engine.begin() as conn:
            if not (await conn.execute(claim)).rowcount:
                return False  # the run moved on since it was read
        extra = {"run_id": run.id, "function": run.function, "attempt": attempt}
        if reason is not None:
            logger.error("run %s of %s %s: failed: %s", run.id, run.function, run.status, reason, extra=extra)
            if run.parent is not None:
                await tell_parent(self.runtime, run.id, "failed", reason=reason)  # no worker to tell it
            return True
        enqueued_at = run.enqueued_at.timestamp() if run.enqueued_at.tzinfo else _utc_timestamp(run.enqueued_at)
        assert fn is not None
        queue = run.queue if run.queue in self.runtime.app.manifest.queue_names() else self.runtime.queue_of(fn)
        deadline = _utc_timestamp(run.deadline) if run.deadline is not None else None
        message = self.runtime.message(
            run.function,
            run.id,
            run.arguments,
            attempt,
            enqueued_at,
            deadline=deadline,
            parent=run.parent,  # a child run (`ctx.invoke`) still wakes its parent when it ends
        )
        await self.runtime.broker.kick_many([message], queue=queue)
        logger.warning(
            "run %s of %s was %s but its message is gone from Redis; queued it again (attempt %d)",
            run.id,
            run.function,
            run.status,
            attempt,
            extra=extra,
        )
        return True


def _utc_timestamp(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()
