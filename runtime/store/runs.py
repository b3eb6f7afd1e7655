"""Run records: one row per task run (SQLModel), in SQLite or Postgres, written in batches. A worker reaches its
first task without SQLAlchemy: the schema revision is read and its updates written by the driver itself (sqlite3,
asyncpg); the engine is made where a query needs it, and the SQLModel classes are imported where a statement does."""

from __future__ import annotations

import asyncio
import builtins
import functools
import sys
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime import tracing
from runtime.store import database_url
from runtime.store.attempt_history import check_entries
from runtime.store.big_arguments import json_dumps, split_big, write_new
from runtime.store.counting import FOLD_EVERY, RunCounting
from runtime.store.revision import FOUND_TABLES, VERSIONS, check_revision, revision_of
from runtime.store.run_search import RunSearch
from runtime.store.sqlite_insert import Binder, SqliteInsert, bind_steps
from runtime.store.upsert_sql import upsert_sql
from runtime.store.values import ENQUEUE_ONLY, MUTABLE

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from runtime.store.models import Run
    from runtime.store.postgres_insert import PostgresInsert
    from runtime.store.steps import StepJournal

INLINE_UPDATES = 200  # a worker's batch of run updates of at most this many rows is written on the loop's thread


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class RunStore(RunCounting, RunSearch):
    """Reads and writes run records. Every process opens one; the worker writes through a batcher."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = database_url.parse(url)
        if parsed is None:  # not a URL: SQLAlchemy's error says why
            from sqlalchemy.engine import make_url

            make_url(url)
        self.is_sqlite = parsed is not None and parsed.backend == "sqlite"
        path = parsed.database if parsed and self.is_sqlite else None
        if path and path != ":memory:":
            database_url.check_sqlite_folder(path)
        # the enqueue's insert and the worker's updates by the driver itself (runtime/store/sqlite_insert.py,
        # runtime/store/postgres_insert.py); the insert's statement compiled by SQLAlchemy at the first enqueue
        self.fast_insert: SqliteInsert | PostgresInsert | None = None
        self._fold_due = time.monotonic() + FOLD_EVERY  # see fold_counts_now_and_then
        self._folding: asyncio.Task[None] | None = None
        if parsed and parsed.backend == "postgresql" and parsed.driver == "asyncpg":
            connect_args: Mapping[str, Any] | None = database_url.asyncpg_connect_args(parsed)
            if connect_args is None:  # several hosts: as SQLAlchemy's dialect reads them
                _, connect_args = self.engine.dialect.create_connect_args(self.engine.url)
            from runtime.store.postgres_insert import PostgresInsert  # imports asyncpg: only on Postgres

            self.fast_insert = PostgresInsert(connect_args, self._compiled_insert)
        if (file := database_url.sqlite_file(parsed)) is not None:
            self.fast_insert = SqliteInsert(str(Path(file).absolute()), self._compiled_insert, _sqlite_pragmas)

    @functools.cached_property
    def engine(self) -> AsyncEngine:
        """SQLAlchemy's async engine, made on first use: the dashboard's and the CLI's queries, tracing, big
        arguments, an empty database's creation (a worker's first task needs none of them)."""
        from sqlalchemy import event
        from sqlalchemy.ext.asyncio import create_async_engine

        kwargs: dict[str, Any] = {"json_serializer": json_dumps}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 10}
        else:
            kwargs |= {"pool_size": 5, "max_overflow": 5, "pool_pre_ping": True}
        engine = create_async_engine(self.url, **kwargs)
        if self.is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine

    def _compiled_insert(self) -> tuple[str, Binder]:
        return bind_steps(self._insert_new, self.engine.dialect)

    async def init(self) -> None:
        """Check the run store's schema before anything uses it: an empty database is created at the head
        revision (safe when several processes start at once), an older schema is a ConfigError saying to
        run `runtime db upgrade`. The app's own SQLModel tables are created if missing, as always."""
        for attempt in range(5):
            try:
                revision = await self._stored_revision()
                if revision is None:
                    from runtime.store.schema import create_at_head

                    async with self.engine.begin() as conn:
                        revision = await conn.run_sync(create_at_head)
                    if revision is None:
                        return
                check_revision(revision)
                if "sqlmodel" in sys.modules:  # the app's own tables, if it has any (ours are at the head revision)
                    async with self.engine.begin() as conn:
                        await conn.run_sync(sys.modules["sqlmodel"].SQLModel.metadata.create_all)
                return
            except Exception as exc:
                from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

                # another process was creating the schema at the same time: read it again
                if attempt == 4 or not isinstance(exc, IntegrityError | ProgrammingError | OperationalError):
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def _stored_revision(self) -> str | None:
        """The schema revision the database is at (runtime/store/revision.py), read by the driver where the store
        has one, else through the engine."""
        fast = self.fast_insert
        if isinstance(fast, SqliteInsert):
            tables = {name for (name,) in await fast.read(FOUND_TABLES["sqlite"], ())}
            versions = await fast.read(VERSIONS, ()) if "alembic_version" in tables else []
            return revision_of(tables, [version for (version,) in versions])
        if fast is not None:

            async def read(conn: Any) -> str | None:
                tables = {row[0] for row in await conn.fetch(FOUND_TABLES["postgresql"])}
                versions = await conn.fetch(VERSIONS) if "alembic_version" in tables else []
                return revision_of(tables, [row[0] for row in versions])

            return await fast.transact(read, FOUND_TABLES["postgresql"])
        from runtime.store.schema import stored_revision

        async with self.engine.connect() as conn:
            return await conn.run_sync(stored_revision)

    async def close(self) -> None:
        folding = self._folding
        if folding is not None and folding.get_loop() is asyncio.get_running_loop():
            # a fold under way may finish (one short transaction), unless the database does not answer
            await asyncio.wait([folding], timeout=2)
            folding.cancel()
        if self.fast_insert is not None:
            await self.fast_insert.close()
        if "engine" in self.__dict__:  # made
            await self.engine.dispose()

    @functools.cached_property
    def steps(self) -> StepJournal:
        """Durable functions' saved steps (made on first use: a worker whose tasks take no steps never needs them)."""
        from runtime.store.steps import StepJournal

        return StepJournal(lambda: self.engine, "sqlite" if self.is_sqlite else "postgresql", self.fast_insert)

    async def ping(self) -> None:
        from sqlalchemy import select

        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    @functools.cached_property
    def _upsert(self) -> Any:
        """INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE newer: the engine's statement (traced, big arguments); the
        driver runs its text of runtime/store/upsert_sql.py."""
        from sqlalchemy import func, literal_column

        from runtime.store.attempt_history import history_columns
        from runtime.store.models import Run

        statement = self._insert()
        table = Run.__table__  # type: ignore[attr-defined]
        return statement.on_conflict_do_update(
            index_elements=["id"],
            # a run enqueued untraced gets the trace its traced attempt started
            set_={c: getattr(statement.excluded, c) for c in MUTABLE}
            | {"trace_id": func.coalesce(table.c.trace_id, statement.excluded.trace_id)}
            # an attempt's entry is appended (runtime/store/attempt_history.py)
            | {c: literal_column(sql) for c, sql in history_columns(self.is_sqlite).items()},
            where=table.c.version < statement.excluded.version,
        )

    def _insert(self, model: Any = None) -> Any:
        from runtime.store.models import Run
        from runtime.store.step_engine import dialect_insert

        table = (model or Run).__table__  # type: ignore[union-attr]
        return dialect_insert("sqlite" if self.is_sqlite else "postgresql")(table)

    async def insert_many(self, runs: list[Run] | list[dict[str, Any]]) -> None:
        """Record new runs. A run the worker already recorded (it can be first) keeps the worker's state
        and gains what only the enqueue knows."""
        if not runs:
            return
        rows, side = split_big([run if isinstance(run, dict) else run.model_dump() for run in runs])
        if self.fast_insert is not None and not side and not tracing.enabled():  # traced: the instrumented engine
            await self.fast_insert.insert(rows)
        else:
            async with self.engine.begin() as conn:
                await conn.execute(self._insert_new, rows)
                if side:  # a worker that recorded the run first wrote them already
                    await conn.execute(self._insert_arguments, side)
        self.fold_counts_now_and_then()

    @functools.cached_property
    def _insert_arguments(self) -> Any:
        from runtime.store.models import RunArguments

        return self._insert(RunArguments).on_conflict_do_nothing(index_elements=["run_id"])

    @functools.cached_property
    def _insert_new(self) -> Any:
        from sqlalchemy import func

        from runtime.store.models import Run

        statement = self._insert()
        table = Run.__table__  # type: ignore[attr-defined]
        return statement.on_conflict_do_update(
            index_elements=["id"],
            set_={c: getattr(statement.excluded, c) for c in ENQUEUE_ONLY}
            | {"trace_id": func.coalesce(statement.excluded.trace_id, table.c.trace_id)},
        )

    async def update_many(self, updates: list[dict[str, Any]]) -> None:
        """Write full states of runs (each with `id`, `version` and the row's required fields), creating
        rows that are missing and never overwriting a row with a newer version. A row's `history` is what its
        update adds (at most one attempt's entry), appended to the stored list.

        Big arguments (a 1 MB document) are written only for a run whose arguments are not stored yet (the
        worker recorded it before its enqueue did); its later updates leave them as they are."""
        if not updates:
            return
        check_entries(updates)
        updates, side = split_big(updates)
        fast = None if tracing.enabled() else self.fast_insert  # traced: the instrumented engine
        if fast is not None:
            if side:
                await write_new(fast, side)  # before the rows that name them; a retry finds them known
            await self._fast_upsert(fast, updates)
            self.fold_counts_now_and_then()
            return
        from sqlalchemy import select

        from runtime.store.models import RunArguments

        async with self.engine.begin() as conn:
            if side:
                table = RunArguments.__table__  # type: ignore[attr-defined]
                wanted = [row["run_id"] for row in side]
                found = await conn.execute(select(table.c.run_id).where(table.c.run_id.in_(wanted)))
                known = {run_id for (run_id,) in found.all()}
                side = [row for row in side if row["run_id"] not in known]
                if side:
                    await conn.execute(self._insert_arguments, side)
            await conn.execute(self._upsert, updates)
        self.fold_counts_now_and_then()

    @functools.cached_property
    def _upsert_sql(self) -> tuple[str, Binder]:
        return upsert_sql("sqlite" if self.is_sqlite else "postgresql")

    async def _fast_upsert(self, fast: SqliteInsert | PostgresInsert, updates: list[dict[str, Any]]) -> None:
        """`update_many`'s upsert by the driver itself, on the enqueue insert's connection: one transaction on
        the loop's thread while the write lock is free (SQLite), one round trip (Postgres). Through the engine
        the worker's batch cost ~0.7 ms of pool checkout, greenlet switches and thread hops."""
        sql, binder = self._upsert_sql
        rows = [binder(row) for row in updates]
        if isinstance(fast, SqliteInsert) or len(rows) == 1:
            await fast.write(sql, rows, len(updates) <= INLINE_UPDATES)
        else:  # Postgres: one statement for the batch (its count triggers run once; runs are unique in a batch)
            await fast.write_columns(self._upsert_unnested, rows)

    @functools.cached_property
    def _upsert_unnested(self) -> str:
        from runtime.store.postgres_insert import unnested

        return unnested(self._upsert_sql[0])

    def runs(self, *columns: Any) -> Any:
        """SELECT of runs (whole rows, or `columns`) with their big arguments joined."""
        from sqlalchemy import select

        from runtime.store.models import Run, RunArguments

        table = Run.__table__  # type: ignore[attr-defined]
        side = RunArguments.__table__  # type: ignore[attr-defined]
        what = columns or (table, side.c.arguments.label("big_arguments"))
        return select(*what).select_from(table.outerjoin(side, side.c.run_id == table.c.id))

    async def _delete_ids(self, conn: Any, ids: builtins.list[str], *where: Any) -> int:
        """Delete these runs (those also matching `where`), their big arguments and their steps; returns how
        many runs."""
        from sqlalchemy import select

        from runtime.store.models import Run, RunArguments, Step

        table = Run.__table__  # type: ignore[attr-defined]
        result = await conn.execute(table.delete().where(table.c.id.in_(ids), *where))
        for side in (RunArguments.__table__, Step.__table__):  # type: ignore[attr-defined]
            orphans = [side.c.run_id.in_(ids)]
            if where:  # some of these runs may be kept
                orphans.append(~select(table.c.id).where(table.c.id == side.c.run_id).exists())
            await conn.execute(side.delete().where(*orphans))
        return int(result.rowcount or 0)

    async def get(self, run_id: str) -> Run | None:
        from runtime.store.models import Run, as_run

        table = Run.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(self.runs().where(table.c.id == run_id))).mappings().first()
        return as_run(row) if row else None

    async def list(
        self,
        *,
        function: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
        ids: list[str] | None = None,
    ) -> list[Run]:
        from runtime.store.models import Run, as_run

        table = Run.__table__  # type: ignore[attr-defined]
        query = self.runs().order_by(table.c.enqueued_at.desc(), table.c.id.desc())
        if function:
            query = query.where(table.c.function == function)
        if status:
            query = query.where(table.c.status == status)
        if ids is not None:
            query = query.where(table.c.id.in_(ids))
        query = query.limit(limit).offset(offset)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [as_run(row) for row in rows]

    async def delete(self, run_id: str) -> bool:
        async with self.engine.begin() as conn:
            return bool(await self._delete_ids(conn, [run_id]))

    async def prune(
        self,
        finished_before: datetime,
        *,
        statuses: tuple[str, ...] = ("succeeded",),
        functions: builtins.list[str] | None = None,
        except_functions: builtins.list[str] | None = None,
    ) -> builtins.list[str]:
        """Delete runs in `statuses` that finished before the given time (only of `functions`, or of every
        function but `except_functions`); returns their ids, so their dead letters can go too."""
        from sqlalchemy import select

        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        where = [table.c.status.in_(statuses), table.c.finished_at < finished_before]
        if functions is not None:
            where.append(table.c.function.in_(functions))
        if except_functions:
            where.append(table.c.function.not_in(except_functions))
        removed: builtins.list[str] = []
        while True:  # in chunks: a long-idle store may hold millions, and one transaction would lock it all
            async with self.engine.begin() as conn:
                ids = list((await conn.execute(select(table.c.id).where(*where).limit(PRUNE_CHUNK))).scalars())
                if ids:
                    await self._delete_ids(conn, ids)
            removed += ids
            if len(ids) < PRUNE_CHUNK:
                return removed

    async def get_many(self, ids: builtins.list[str]) -> dict[str, Run]:
        """The runs with these ids that exist, by id."""
        from runtime.store.models import Run, as_run

        table = Run.__table__  # type: ignore[attr-defined]
        out: dict[str, Run] = {}
        for start in range(0, len(ids), PRUNE_CHUNK):
            chunk = ids[start : start + PRUNE_CHUNK]
            async with self.engine.connect() as conn:
                rows = (await conn.execute(self.runs().where(table.c.id.in_(chunk)))).mappings().all()
            out |= {row["id"]: as_run(row) for row in rows}
        return out

    async def delete_many(self, ids: builtins.list[str]) -> int:
        """Delete these runs; returns how many existed."""
        if not ids:
            return 0
        async with self.engine.begin() as conn:
            return await self._delete_ids(conn, ids)

    async def forget(self, ids: builtins.list[str]) -> None:
        """Delete the records of these runs that no worker has touched (their messages never reached Redis)."""
        from runtime.store.models import Run

        table = Run.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            await self._delete_ids(conn, ids, table.c.version == 0)

    async def set_arguments(self, run_id: str, arguments: dict[str, Any], **values: Any) -> None:
        """Replace a run's arguments (and other columns, `values`) before it starts: a debounced run takes each
        later enqueue's, a batch run the items it got."""
        from sqlalchemy import delete, update

        from runtime.store.models import Run, RunArguments

        [row], side = split_big([{"id": run_id, "arguments": arguments}])
        table, big = Run.__table__, RunArguments.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            await conn.execute(delete(big).where(big.c.run_id == run_id))
            if side:
                await conn.execute(self._insert_arguments, side)
            await conn.execute(update(table).where(table.c.id == run_id).values(arguments=row["arguments"], **values))


PRUNE_CHUNK = 500  # rows per statement in prune, get_many and bulk operations (SQLite allows 999 parameters)
