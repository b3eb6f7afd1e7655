"""The enqueue's record insert on SQLite, run by the `sqlite3` module itself in one thread hop.

Through SQLAlchemy's async engine one single-row insert costs about 680 µs of CPU: the pool checkout,
greenlet switches, and aiosqlite thread hops for BEGIN, the statement and COMMIT. On a thread of its own,
`sqlite3` does the same transaction in one hop for about 120 µs, and a sequential `enqueue()` is mostly
that insert. The statement is SQLAlchemy's own, compiled once, and every value goes through the bind
processor SQLAlchemy would apply (JSON, DateTime), so the rows are the same as the engine writes; errors
come out as SQLAlchemy's exception types, which the callers already handle. While tracing is on, inserts go
through the instrumented engine instead, so they show as database spans.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError


class SqliteInsert:
    def __init__(self, path: str, statement: Any, dialect: Dialect, pragmas: Callable[[Any, Any], None]) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql: str = compiled.string
        processors = compiled._bind_processors
        # a key missing from a row takes its column's default, as SQLAlchemy's executemany gives it
        defaults = {
            c.name: c.default.arg for c in statement.table.columns if c.default is not None and c.default.is_scalar
        }
        self.steps = [(name, processors.get(name), defaults.get(name)) for name in compiled.positiontup or ()]
        self.path = path
        self.pragmas = pragmas
        self.conn: sqlite3.Connection | None = None  # opened, used and closed on the one thread
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="runs-insert")

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert these rows in one transaction (raises SQLAlchemy's wrapper of what sqlite3 raised)."""
        params = [tuple(_value(row, step) for step in self.steps) for row in rows]
        try:
            await asyncio.get_running_loop().run_in_executor(self.thread, self._write, params)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(self.sql, params[:1], exc, sqlite3.Error) from exc

    def _write(self, params: list[tuple[Any, ...]]) -> None:
        if self.conn is None:
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self.pragmas(conn, None)
            self.conn = conn
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self.sql, params)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.OperationalError:  # locked, gone, read-only: the next insert starts on a new connection
            self._close()
            raise

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def close(self) -> None:
        if self.thread._shutdown:  # closed already
            return
        await asyncio.get_running_loop().run_in_executor(self.thread, self._close)
        self.thread.shutdown(wait=False)


def _value(row: dict[str, Any], step: tuple[str, Callable[[Any], Any] | None, Any]) -> Any:
    name, process, default = step
    value = row[name] if name in row else default
    return process(value) if process is not None else value
