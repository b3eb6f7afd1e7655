"""Group commit for enqueues: the records of concurrent enqueues are written in one statement.

Each `enqueue()` must have its run's record saved before it returns (a caller, or anyone it tells the id,
may read the run at once). One transaction per call costs most of an enqueue's CPU (SQLAlchemy's connection
checkout, the driver's thread hop, the commit), so callers that enqueue at the same time (an HTTP function
under load, `asyncio.gather`) share one: rows added during one loop turn, or while the previous batch is
being written, go out together, and each caller waits for its own batch. If a batch fails, each caller's
rows are written on their own, so one bad row fails only its own enqueue.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime.store.runs import RunStore

MAX_ROWS = 1000  # rows per statement (SQLite's variable limit is far above this at 20 columns)


class RecordWriter:
    def __init__(self, store: RunStore) -> None:
        self.store = store
        self.waiting: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self.writing: asyncio.Task[None] | None = None

    async def insert(self, rows: list[dict[str, Any]], *, alone: bool = False) -> None:
        """Save these records, with whatever other enqueues are saving now; raises what their write raised.
        `alone`: the caller knows of no other enqueue in flight, so with nothing being written either, it
        writes its rows itself, without a task and a future."""
        if alone and not self.waiting and (self.writing is None or self.writing.done()):
            await self.store.insert_many(rows)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append((rows, future))
        if self.writing is None or self.writing.done():
            self.writing = asyncio.create_task(self._write())
        await future

    async def _write(self) -> None:
        try:
            await self._write_all()
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            for _, future in self.waiting:
                future.cancel()
            self.waiting.clear()
            raise

    async def _write_all(self) -> None:
        await asyncio.sleep(0)  # let this loop turn's other enqueues join the batch
        while self.waiting:
            batch: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
            size = 0
            while self.waiting and (not batch or size + len(self.waiting[0][0]) <= MAX_ROWS):
                rows, future = self.waiting.pop(0)
                batch.append((rows, future))
                size += len(rows)
            try:
                await self.store.insert_many([row for rows, _ in batch for row in rows])
            except Exception as exc:
                if len(batch) == 1:
                    _fail(batch[0][1], exc)
                else:
                    for rows, future in batch:  # one bad row fails only its own caller
                        await self._alone(rows, future)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _alone(self, rows: list[dict[str, Any]], future: asyncio.Future[None]) -> None:
        try:
            await self.store.insert_many(rows)
        except Exception as exc:
            _fail(future, exc)
            return
        if not future.done():
            future.set_result(None)


def _fail(future: asyncio.Future[None], error: Exception) -> None:
    if not future.done():  # its caller may have been cancelled
        future.set_exception(error)
