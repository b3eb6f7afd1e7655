"""The enqueue's record insert on SQLite, run by the `sqlite3` module itself in one thread hop.

Through SQLAlchemy's async engine one single-row insert costs about 680 µs of CPU: the pool checkout,
greenlet switches, and aiosqlite thread hops for BEGIN, the statement and COMMIT. On a thread of its own,
`sqlite3` does the same transaction in one hop for about 120 µs, and a sequential `enqueue()` is mostly
that insert. The statement is SQLAlchemy's own, compiled once (the worker's upsert: its text, checked against
SQLAlchemy's, runtime/store/upsert_sql.py), and every value goes through the bind processor SQLAlchemy would
apply (JSON, DateTime), so the rows are the same as the engine writes; errors come out as SQLAlchemy's exception
types (imported when one is raised), which the callers already handle. While tracing is on, inserts go
through the instrumented engine instead, so they show as database spans.

A small insert skips even that hop when the database is free: it is tried on the event loop's own thread,
with a busy timeout of zero, in about 25 µs (the hop alone costs about 125 µs of CPU and a loop wake-up).
If another connection holds the write lock, the try gives up at once and the insert waits on the thread,
as before, so the loop never waits for a lock. That connection never checkpoints on commit (it would
write and sync the WAL into the database on the loop); every CHECKPOINT_EVERY inline commits, a passive
checkpoint runs on the thread instead, with the inserts that come meanwhile queued behind it there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import sqlite3
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from runtime import gc_pause
from runtime.store.bulk_counts import insert_counted

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect

T = TypeVar("T")
INLINE_ROWS = 20  # inserts of at most this many rows are tried on the loop's thread
COUNTED_AT_ONCE = 50  # inserts of at least this many rows count their runs themselves (runtime/store/bulk_counts.py)
CHECKPOINT_EVERY = 128  # inline commits between checkpoints on the thread (~1000 WAL pages, SQLite's own default)


class CompiledInsert:
    """The insert statement of a store's driver, compiled at the first insert: a worker, which seldom inserts,
    needs neither the tables' classes nor SQLAlchemy for it."""

    compile: Callable[[], tuple[str, Binder]]  # the statement's SQL and its parameters' Binder (see bind_steps)

    @functools.cached_property
    def _compiled(self) -> tuple[str, Binder]:
        return self.compile()

    @property
    def sql(self) -> str:
        return self._compiled[0]

    @property
    def binder(self) -> Binder:
        return self._compiled[1]


class SqliteInsert(CompiledInsert):
    def __init__(
        self, path: str, compile: Callable[[], tuple[str, Binder]], pragmas: Callable[[Any, Any], None]
    ) -> None:
        self.compile = compile
        self.path = path
        self.pragmas = pragmas
        self.conn: sqlite3.Connection | None = None  # opened, used and closed on the one thread
        self.inline: sqlite3.Connection | None = None  # opened, used and closed on the loop's thread
        self.inline_commits = 0
        self.checkpointing = False
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="runs-insert")

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert these rows in one transaction (raises SQLAlchemy's wrapper of what sqlite3 raised)."""
        params = self.binder.many(rows)
        if len(params) == 1 and self._insert_inline(params[0]):
            return
        if len(params) >= COUNTED_AT_ONCE:  # counted once per function and status, not by a trigger per run
            await self.transact(lambda conn: insert_counted(conn, self.sql, params, rows), False, self.sql)
            return
        await self.write(self.sql, params, len(params) <= INLINE_ROWS)

    async def write(self, sql: str, params: list[tuple[Any, ...]], inline: bool = True) -> None:
        """`sql` for each row of `params` (bound values), in one transaction: on the loop's thread if `inline` and
        the write lock is free now (see `transact`)."""
        await self.transact(lambda conn: conn.executemany(sql, params), inline, sql)

    def _insert_inline(self, params: tuple[Any, ...]) -> bool:
        """One row in one statement on the loop's thread, its own transaction (no BEGIN and COMMIT around
        it), if the write lock is free now: True once it is saved, False if the lock was taken (nothing was
        written: the thread's try waits for it)."""
        if self.checkpointing or not self._open_inline():
            return False
        conn = self.inline
        assert conn is not None
        try:
            conn.execute(self.sql, params)
        except sqlite3.OperationalError as exc:  # busy: nothing written; anything else: a new connection next
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_BUSY:
                return False
            self._close_inline()
            raise wrapped(self.sql, [params], exc) from exc
        except sqlite3.Error as exc:
            raise wrapped(self.sql, [params], exc) from exc
        self.inline_commits += 1
        if self.inline_commits % CHECKPOINT_EVERY == 0:
            self.checkpointing = True  # until it is done, writes queue behind it on the thread
            asyncio.get_running_loop().run_in_executor(self.thread, self._checkpoint)
        return True

    async def transact(self, work: Callable[[sqlite3.Connection], T], inline: bool = True, sql: str = "") -> T:
        """`work(conn)` in one write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back if it raises), on
        the loop's thread if `inline` and the write lock is free now, else on the thread; its value. Raises
        SQLAlchemy's wrapper of what sqlite3 raised (`sql` names the statement)."""
        loop = asyncio.get_running_loop()
        try:
            if inline and not self.checkpointing:
                done, value = self._write_inline(work)
                if done:
                    if self.inline_commits % CHECKPOINT_EVERY == 0:
                        self.checkpointing = True  # until it is done, writes queue behind it on the thread
                        loop.run_in_executor(self.thread, self._checkpoint)
                    return value  # type: ignore[return-value]
            return await loop.run_in_executor(self.thread, self._write, work)
        except sqlite3.Error as exc:
            raise wrapped(sql, [], exc) from exc

    async def read(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT: on the loop's thread when nothing else uses its connection, else (or if
        the database is busy) on the thread."""
        try:
            if not self.checkpointing and self._open_inline():
                assert self.inline is not None
                try:
                    return self.inline.execute(sql, params).fetchall()
                except sqlite3.OperationalError as exc:  # busy: the thread waits; anything else: its try says
                    if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                        self._close_inline()
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.thread, lambda: self._connection().execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise wrapped(sql, [params], exc) from exc

    def _open_inline(self) -> bool:
        if self.inline is None:
            try:
                self.inline = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
                self.pragmas(self.inline, None)
                self.inline.execute("PRAGMA busy_timeout=0")
                self.inline.execute("PRAGMA wal_autocheckpoint=0")
            except sqlite3.Error:  # the thread's try says what is wrong
                self._close_inline()
                return False
        return True

    def _write_inline(self, work: Callable[[sqlite3.Connection], T]) -> tuple[bool, T | None]:
        """The write on this thread if the write lock is free now (True, its value), else nothing (False)."""
        if not self._open_inline():
            return False, None
        conn = self.inline
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:  # busy: the thread waits; anything else: its try says what
            if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:
                self._close_inline()
            return False, None
        try:
            value = self._commit(conn, work)
        except sqlite3.OperationalError:  # gone, read-only: the next write starts on a new connection
            self._close_inline()
            raise
        self.inline_commits += 1
        return True, value

    def _commit(self, conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
        """The work, in the transaction BEGIN IMMEDIATE opened: committed, or rolled back if it fails."""
        try:
            value = work(conn)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):  # what failed is the error to raise
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return value

    def _checkpoint(self) -> None:
        """Copy the WAL into the database. No insert of this store writes meanwhile, so the copy can finish
        and the next write starts the WAL over (with writes going on it would only grow)."""
        try:
            with contextlib.suppress(sqlite3.Error):  # a busy database is checkpointed by the next one
                self._connection().execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            self.checkpointing = False

    def _close_inline(self) -> None:
        if self.inline is not None:
            with contextlib.suppress(sqlite3.Error):
                self.inline.close()
            self.inline = None

    def _connection(self) -> sqlite3.Connection:
        if self.conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self.pragmas(conn, None)
            self.conn = conn
        return self.conn

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            return self._commit(conn, work)
        except sqlite3.OperationalError:  # locked, gone, read-only: the next write starts on a new connection
            self._close()
            raise

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def close(self) -> None:
        self._close_inline()
        if self.thread._shutdown:  # closed already
            return
        await asyncio.get_running_loop().run_in_executor(self.thread, self._close)
        self.thread.shutdown(wait=False)


Step = tuple[str, Callable[[Any], Any] | None, Any]  # a parameter's column, its bind processor, its default


class Binder:
    """A row's values in a statement's parameter order, each through the bind processor SQLAlchemy would apply
    (JSON, DateTime), a missing key given its column's default (as SQLAlchemy's executemany gives it). Made once
    per statement: a call is one dict merge, one itemgetter and the processors (~5 µs a worker's row instead
    of ~13 µs, SQLite's DateTime processor being most of it)."""

    def __init__(self, steps: list[Step], datetimes: Collection[str] = ()) -> None:
        self.steps = steps
        self.names = [name for name, _, _ in steps]
        self.defaults = {name: default for name, _, default in steps}
        self.get = operator.itemgetter(*self.names) if len(self.names) > 1 else lambda row: (row[self.names[0]],)
        self.processed = [
            (i, datetime_or(process) if name in datetimes else process)
            for i, (name, process, _) in enumerate(steps)
            if process is not None
        ]

    def __call__(self, row: dict[str, Any]) -> tuple[Any, ...]:
        values = list(self.get(self.defaults | row))
        for i, process in self.processed:
            values[i] = process(values[i])
        return tuple(values)

    def many(self, rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Rows' values. A value the rows share (an enqueue's rows share every column but the id and the arguments)
        goes through its bind processor once."""
        if len(rows) == 1:
            return [self(rows[0])]
        defaults, get = self.defaults, self.get
        with gc_pause.building(len(rows)):
            values = [list(get(defaults | row)) for row in rows]
            for i, process in self.processed:
                last: Any = object()
                done: Any = None
                for row_values in values:
                    value = row_values[i]
                    if value is not last:
                        last, done = value, process(value)
                    row_values[i] = done
            return [tuple(row_values) for row_values in values]


def sqlite_datetime(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's SQLite DateTime stores it: text with microseconds (`2026-12-07 14:34:07.935321`),
    by `isoformat` for the naive ones we write, at a fifth of the cost of SQLAlchemy's processor."""
    if value is None:
        return None
    if value.tzinfo is None:
        return value.isoformat(" ", "microseconds")
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}"
    )


def datetime_or(process: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """SQLite's DateTime bind processor: `sqlite_datetime` for a datetime, anything else through SQLAlchemy's."""

    def fast(value: Any) -> Any:
        return sqlite_datetime(value) if type(value) is datetime else process(value)

    return fast


def bind_steps(statement: Any, dialect: Dialect) -> tuple[str, Binder]:
    """SQLAlchemy's SQL for `statement` and the Binder of its positional parameters."""
    from sqlalchemy import DateTime

    compiled = statement.compile(dialect=dialect)
    processors = compiled._bind_processors
    columns = statement.table.columns
    defaults = {c.name: c.default.arg for c in columns if c.default is not None and c.default.is_scalar}
    datetimes = {c.name for c in columns if dialect.name == "sqlite" and isinstance(c.type, DateTime)}
    steps = [(name, processors.get(name), defaults.get(name)) for name in compiled.positiontup or ()]
    return compiled.string, Binder(steps, datetimes)


def wrapped(sql: str, params: Any, error: sqlite3.Error) -> Exception:
    """What sqlite3 raised as SQLAlchemy's exception type, as the engine raises it (SQLAlchemy imported only now)."""
    from sqlalchemy.exc import DBAPIError

    return DBAPIError.instance(sql, params, error, sqlite3.Error)
