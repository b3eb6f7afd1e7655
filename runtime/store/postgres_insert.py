"""The enqueue's record insert on Postgres, run by asyncpg itself on a connection of its own.

Through SQLAlchemy's async engine one single-row insert costs about 760 µs of CPU and three round trips
(BEGIN, the statement, COMMIT) on top of the pool checkout and greenlet switches. asyncpg does the same
insert in one round trip for about 125 µs: a single statement commits by itself, and `executemany` of a
batch is atomic. The statement and the bind processing are SQLAlchemy's (the worker's upsert: its text checked
against SQLAlchemy's, runtime/store/upsert_sql.py), and so are the errors' types, SQLAlchemy imported only when
one is raised, as in runtime/store/sqlite_insert.py. A connection that fails is dropped, and the next insert
opens a new one; while tracing is on, inserts go through the instrumented engine instead, so they show as
database spans.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncpg

from runtime.store.bulk_counts import SET_COUNTED, counted_insert
from runtime.store.sqlite_insert import Binder, CompiledInsert

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0  # seconds, as the engine's
# the connection is gone or unusable (the insert may be tried again on a new one); OSError covers
# ConnectionError and TimeoutError
BROKEN = (
    asyncpg.PostgresConnectionError,  # the connection was closed, or could not be made
    asyncpg.OperatorInterventionError,  # the server is shutting down, or terminated this connection
    asyncpg.InterfaceError,
    OSError,
)
# inserts of at least this many rows count their runs themselves: at 10 rows the transaction's two more round trips
# and the arrays' encoding cost what the trigger's rows save, at 20 rows ~30% less CPU (client and database)
COUNTED_AT_ONCE = 20
# what SQLAlchemy's asyncpg adapter takes out of the connect arguments before asyncpg sees them
_ADAPTER_ONLY = ("async_creator_fn", "prepared_statement_cache_size", "prepared_statement_name_func")


def unnested(sql: str) -> str:
    """A one-row `INSERT ... VALUES ($1::T1, $2::T2, ...) ...` as `INSERT ... SELECT * FROM unnest($1::T1[],
    $2::T2[], ...) ...`: each parameter an array of the rows' values, every row in one statement."""
    head, found, tail = sql.partition(" VALUES (")
    values, close, rest = tail.partition(")")
    if not found or not close or "(" in values:
        raise ValueError(f"not a one-row INSERT ... VALUES: {sql[:200]}")
    arrays = ", ".join(f"{parameter.strip()}[]" for parameter in values.split(","))
    return f"{head} SELECT * FROM unnest({arrays}){rest}"


class PostgresInsert(CompiledInsert):
    def __init__(self, connect_args: Mapping[str, Any], compile: Callable[[], tuple[str, Binder]]) -> None:
        self.compile = compile
        self.connect_args = {k: v for k, v in connect_args.items() if k not in _ADAPTER_ONLY}
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()  # one statement at a time on the connection

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert these rows atomically (raises SQLAlchemy's wrapper of what asyncpg raised). A connection
        found broken (the server restarted, a proxy dropped it) is replaced and the insert tried once more,
        as the engine's pre-ping would: it is an upsert, so a first try that did commit changes nothing.

        COUNTED_AT_ONCE runs or more go in one statement with their counts, in a transaction that the insert trigger
        skips (runtime/store/bulk_counts.py, migration 0008): a `run_counts` row per function and status, not one per
        run, and ~20 µs of database CPU a run instead of ~52 for a statement a row and its trigger. A run twice in
        the batch goes a statement a row, as one statement may not update a row twice."""
        params = self.binder.many(rows)
        if len(rows) < COUNTED_AT_ONCE or len({row["id"] for row in rows}) < len(rows):
            await self.write(self.sql, params)
            return
        columns = [list(column) for column in zip(*params, strict=True)]

        async def work(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(SET_COUNTED)
                await conn.execute(self._counted, *columns)

        await self.transact(work, self._counted, params[:1])

    @functools.cached_property
    def _counted(self) -> str:
        return counted_insert(unnested(self.sql))

    async def write(self, sql: str, params: list[tuple[Any, ...]], inline: bool = True) -> None:
        """`sql` for each row of `params` (bound values), atomically, in one round trip; tried once more on a new
        connection if this one is broken (see `transact`), so it must be safe to repeat (an upsert is).
        `inline` means nothing here (SQLite's writer runs on the loop's thread when it can)."""

        async def work(conn: asyncpg.Connection) -> None:
            if len(params) == 1:
                await conn.execute(sql, *params[0])
            else:
                await conn.executemany(sql, params)  # atomic: all rows or none

        await self.transact(work, sql, params[:1])

    async def write_columns(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        """`sql` (an `unnested` statement) once for all `rows` (bound values): one statement, whose
        statement-level triggers run once for the batch (`write` runs a statement per row)."""
        await self.write(sql, [tuple(list(column) for column in zip(*rows, strict=True))])

    async def transact(self, work: Callable[[asyncpg.Connection], Awaitable[T]], sql: str, params: Any = ()) -> T:
        """`work(conn)` on this connection, alone on it (one statement is atomic by itself; `work` opens a
        transaction for more). A broken connection is replaced and `work` tried once more, so it must be safe
        to repeat after a commit. Raises SQLAlchemy's wrappers of what asyncpg raised (naming `sql`)."""
        async with self.lock:
            for attempt in (1, 2):
                fresh = self.conn is None or self.conn.is_closed()
                try:
                    if fresh:
                        self.conn = await asyncpg.connect(**self.connect_args, timeout=CONNECT_TIMEOUT)
                    assert self.conn is not None
                    return await work(self.conn)
                except asyncpg.IntegrityConstraintViolationError as exc:
                    from sqlalchemy.exc import IntegrityError  # SQLAlchemy only once something failed

                    raise IntegrityError(sql, params, exc) from exc
                except BROKEN as exc:
                    self._drop()
                    if attempt == 2 or fresh:  # a new connection that fails: the database is away
                        if isinstance(exc, OSError):
                            raise
                        from sqlalchemy.exc import OperationalError

                        raise OperationalError(sql, params, exc) from exc  # as the engine says it: unavailable
                except asyncpg.PostgresError as exc:
                    from sqlalchemy.exc import DBAPIError

                    raise DBAPIError(sql, params, exc) from exc
                except BaseException:  # cancelled mid-statement: the connection's state is unknown
                    self._drop()
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.terminate()

    async def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2.0)
            except Exception:
                conn.terminate()
