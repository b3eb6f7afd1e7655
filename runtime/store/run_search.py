"""Finding runs: the filters the dashboard's and the inspector's lists share (function, status, queue, a run id's
start or end or text in the arguments, a time), for `RunStore.find` and `find_ids`."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from runtime.store.models import Run


class RunSearch:
    """What `RunStore` finds runs with (its engine and its SELECT of runs)."""

    @property
    def engine(self) -> AsyncEngine:  # RunStore's
        raise NotImplementedError

    def runs(self, *columns: Any) -> Any:  # RunStore's
        raise NotImplementedError

    def _matching(
        self,
        *,
        function: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        search: str | None = None,
        since: datetime | None = None,
    ) -> builtins.list[Any]:
        from sqlalchemy import Text, cast, func, or_

        from runtime.store.models import Run, RunArguments

        table = Run.__table__  # type: ignore[attr-defined]
        side = RunArguments.__table__  # type: ignore[attr-defined]
        where: builtins.list[Any] = []
        if function:
            where.append(table.c.function == function)
        if status:
            where.append(table.c.status == status)
        if queue:
            where.append(table.c.queue == queue)
        if since is not None:  # finished since then, or (not finished) enqueued since then
            where.append(func.coalesce(table.c.finished_at, table.c.enqueued_at) >= since)
        if search:
            pattern = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(
                or_(
                    table.c.id.like(f"{pattern}%", escape="\\"),
                    table.c.id.like(f"%{pattern}", escape="\\"),  # the short id users see: its last 8 digits
                    cast(table.c.arguments, Text).ilike(f"%{pattern}%", escape="\\"),
                    cast(side.c.arguments, Text).ilike(f"%{pattern}%", escape="\\"),
                )
            )
        return where

    async def find(
        self,
        *,
        function: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        search: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> builtins.list[Run]:
        """Runs, newest first, filtered like `list` and also by queue, by `search` (the start or the end of
        a run id, or text in the arguments) and by `since` (finished, or if unfinished enqueued, at or after it)."""
        from runtime.store.models import Run, as_run

        table = Run.__table__  # type: ignore[attr-defined]
        where = self._matching(function=function, status=status, queue=queue, search=search, since=since)
        query = self.runs().where(*where).order_by(table.c.enqueued_at.desc(), table.c.id.desc())
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).mappings().all()
        return [as_run(row) for row in rows]

    async def find_ids(
        self, *, function: str | None = None, status: str | None = None, since: datetime | None = None
    ) -> builtins.list[str]:
        """The ids of every matching run, newest first (for bulk replay and delete)."""
        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        where = self._matching(function=function, status=status, since=since)
        query = self.runs(table.c.id).where(*where).order_by(table.c.enqueued_at.desc(), table.c.id.desc())
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())
