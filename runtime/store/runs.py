"""Run records: one row per task run (SQLModel), in SQLite or Postgres, written in batches."""

from __future__ import annotations

import asyncio
import builtins
import functools
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    DateTime,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    cast,
    delete,
    event,
    func,
    insert,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel

from runtime import tracing
from runtime.errors import ConfigError
from runtime.store.sqlite_insert import SqliteInsert

if TYPE_CHECKING:
    from runtime.store.postgres_insert import PostgresInsert

logger = logging.getLogger("runtime.runs")

# the columns a worker's update writes; the rest are set at enqueue
MUTABLE = (
    "status",
    "attempts",
    "last_error",
    "error_type",
    "started_at",
    "finished_at",
    "result",
    "history",
    "version",
)
# the columns only the enqueue knows (a worker's update that lands first leaves them at their defaults)
ENQUEUE_ONLY = ("scheduled_for", "replay_of", "queue", "trace_id", "deadline", "idempotency_key")
STATUSES = ("scheduled", "queued", "running", "retrying", "succeeded", "failed", "cancelled")
FINAL = ("succeeded", "failed", "cancelled")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def from_timestamp(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def to_jsonable(value: Any) -> Any:
    """A task's return value as JSON-able data (pydantic models dumped; the rest by repr)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class Run(SQLModel, table=True):
    """A task run: one row from enqueue to its final status, across all its attempts."""

    __tablename__ = "runs"
    # the dashboard's and the inspector's lists: newest first, filtered by status or by function
    __table_args__ = (
        Index("ix_runs_status_enqueued_at_id", "status", "enqueued_at", "id"),
        Index("ix_runs_function_enqueued_at_id", "function", "enqueued_at", "id"),
        # the dashboard's runs finished per minute, and `runtime queues`' last hour (schema revision 0004)
        Index("ix_runs_finished_at", "finished_at"),
    )

    id: str = Field(primary_key=True, max_length=32)
    function: str = Field(max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    attempts: int = 0
    max_attempts: int = 1
    last_error: str | None = Field(default=None, sa_column=Column(Text))
    enqueued_at: datetime = Field(sa_column=Column(DateTime, nullable=False, index=True))
    scheduled_for: datetime | None = Field(default=None, sa_column=Column(DateTime))
    started_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    finished_at: datetime | None = Field(default=None, sa_column=Column(DateTime))
    result: Any = Field(default=None, sa_column=Column(JSON))
    history: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    replay_of: str | None = Field(default=None, max_length=32)
    # attempt * 10 + phase: an update never overwrites a newer one that was written first
    version: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    # schema revision 0002: each has a default, so a writer that does not know a column leaves it valid
    queue: str = Field(
        default="default", sa_column=Column(String(64), nullable=False, default="default", server_default="default")
    )
    error_type: str | None = Field(default=None, max_length=200)
    trace_id: str | None = Field(default=None, max_length=32)
    deadline: datetime | None = Field(default=None, sa_column=Column(DateTime))
    idempotency_key: str | None = Field(default=None, sa_column=Column(String(200), index=True))

    def public(self) -> dict[str, Any]:
        """The run as the API shows it: `id` first, times in ISO 8601 UTC."""
        data = self.model_dump(exclude={"version"})
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat(timespec="milliseconds") + "Z"
        return {"id": data.pop("id"), **data}


class RunArguments(SQLModel, table=True):
    """A run's arguments when they are big (over BIG_ARGUMENTS characters), kept out of its `runs` row, whose
    `arguments` is then `{}`. A run's row is updated at each step of the run while its arguments never
    change, and SQLite rewrites a whole row, overflow pages included, on every update: with the arguments
    in the row, a 1 MB document was copied three times per run. Written once with the run; every read of
    a run joins it (schema revision 0003)."""

    __tablename__ = "run_arguments"

    run_id: str = Field(primary_key=True, max_length=32)
    arguments: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class RunCount(SQLModel, table=True):
    """Changes to the number of runs per function and status, so counting them never scans `runs`
    (schema revision 0004). Triggers on `runs` append a row per change (+1 for the new status, -1 for the
    old): appending takes no lock another writer waits for, where one counter row per function and
    status would serialise the writers' commits (and deadlock two Postgres transactions taking them in
    different orders). `RunStore.fold_counts()` sums the rows into one per function and status, now and
    then, so what a count reads stays small."""

    __tablename__ = "run_counts"

    # BIGSERIAL on Postgres (every change takes an id); on SQLite, INTEGER PRIMARY KEY is the rowid
    id: int | None = Field(
        default=None, sa_column=Column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    )
    function: str = Field(max_length=200)
    status: str = Field(max_length=16)
    n: int = Field(sa_column=Column(BigInteger, nullable=False))


_COUNT = "INSERT INTO run_counts (function, status, n) VALUES"
COUNT_TRIGGERS = {
    "sqlite": (
        f"CREATE TRIGGER runs_count_insert AFTER INSERT ON runs BEGIN {_COUNT} (NEW.function, NEW.status, 1); END",
        "CREATE TRIGGER runs_count_update AFTER UPDATE OF function, status ON runs"
        " WHEN OLD.status IS NOT NEW.status OR OLD.function IS NOT NEW.function"
        f" BEGIN {_COUNT} (OLD.function, OLD.status, -1), (NEW.function, NEW.status, 1); END",
        f"CREATE TRIGGER runs_count_delete AFTER DELETE ON runs BEGIN {_COUNT} (OLD.function, OLD.status, -1); END",
    ),
    "postgresql": (
        f"""CREATE OR REPLACE FUNCTION runs_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_COUNT} (NEW.function, NEW.status, 1);
    ELSIF TG_OP = 'DELETE' THEN
        {_COUNT} (OLD.function, OLD.status, -1);
    ELSIF OLD.status IS DISTINCT FROM NEW.status OR OLD.function IS DISTINCT FROM NEW.function THEN
        {_COUNT} (OLD.function, OLD.status, -1), (NEW.function, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$""",
        "CREATE TRIGGER runs_count AFTER INSERT OR UPDATE OF function, status OR DELETE ON runs"
        " FOR EACH ROW EXECUTE FUNCTION runs_count()",
    ),
}
DROP_COUNT_TRIGGERS = {
    "sqlite": tuple(f"DROP TRIGGER IF EXISTS runs_count_{op}" for op in ("insert", "update", "delete")),
    "postgresql": ("DROP TRIGGER IF EXISTS runs_count ON runs", "DROP FUNCTION IF EXISTS runs_count()"),
}
COUNT_ALL = (
    "INSERT INTO run_counts (function, status, n) SELECT function, status, COUNT(*) FROM runs GROUP BY function, status"
)
FOLD_EVERY = 5.0  # seconds between a writer's folds of run_counts


def count_runs_from_now_on(conn: Connection) -> None:
    """Create the triggers that keep `run_counts` and count the runs already there. In one transaction
    with the triggers, no write falls between the two."""
    for statement in COUNT_TRIGGERS[conn.dialect.name]:
        conn.exec_driver_sql(statement)
    conn.exec_driver_sql("DELETE FROM run_counts")  # left by a `runs` table dropped by hand, say
    conn.exec_driver_sql(COUNT_ALL)


BIG_ARGUMENTS = 16_384  # characters: arguments this big are kept in `run_arguments`, not in the run's row


def _is_big(arguments: Any) -> bool:
    """Whether a run's arguments are big enough to be kept out of its row."""
    if not arguments:
        return False
    if isinstance(arguments, dict):  # the common case, flat, is decided without encoding
        size = 0
        for value in arguments.values():
            if isinstance(value, str):
                size += len(value)
            elif not isinstance(value, int | float | bool | None):
                break
        else:
            return size > BIG_ARGUMENTS
    return len(_json_dumps(arguments)) > BIG_ARGUMENTS


def _split_big(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows with big arguments moved out (their `arguments` made `{}`), and the moved arguments as
    `run_arguments` rows."""
    side: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for row in rows:
        if _is_big(row.get("arguments")):
            side.append({"run_id": row["id"], "arguments": row["arguments"]})
            row = row | {"arguments": {}}
        out.append(row)
    return out, side


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=to_jsonable).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class RunStore:
    """Reads and writes run records. Every process opens one; the worker writes through a batcher."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = make_url(url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).absolute().parent
            if not folder.is_dir():  # create nothing on a typo: say so
                raise ConfigError(f"DATABASE_URL points into {folder}, which does not exist; create the folder first")
        kwargs: dict[str, Any] = {"json_serializer": _json_dumps}
        if self.is_sqlite:
            kwargs["connect_args"] = {"timeout": 10}
        else:
            kwargs |= {"pool_size": 5, "max_overflow": 5, "pool_pre_ping": True}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # the enqueue's insert by the driver itself (runtime/store/sqlite_insert.py, runtime/store/postgres_insert.py)
        self.fast_insert: SqliteInsert | PostgresInsert | None = None
        self._fold_due = time.monotonic() + FOLD_EVERY  # see fold_counts_now_and_then
        self._folding: asyncio.Task[None] | None = None
        if parsed.get_backend_name() == "postgresql" and self.engine.dialect.driver == "asyncpg":
            from runtime.store.postgres_insert import PostgresInsert  # imports asyncpg: only on Postgres

            _, connect_args = self.engine.dialect.create_connect_args(self.engine.url)
            self.fast_insert = PostgresInsert(connect_args, self._insert_new, self.engine.dialect)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
                path = str(Path(parsed.database).absolute())
                self.fast_insert = SqliteInsert(path, self._insert_new, self.engine.dialect, _sqlite_pragmas)

    async def init(self) -> None:
        """Check the run store's schema before anything uses it: an empty database is created at the head
        revision (safe when several processes start at once), an older schema is a ConfigError saying to
        run `runtime db upgrade`. The app's own SQLModel tables are created if missing, as always."""
        for attempt in range(5):
            try:
                async with self.engine.connect() as conn:
                    revision = await conn.run_sync(stored_revision)
                if revision is None:
                    async with self.engine.begin() as conn:
                        revision = await conn.run_sync(create_at_head)
                    if revision is None:
                        return
                check_revision(revision)
                async with self.engine.begin() as conn:
                    await conn.run_sync(SQLModel.metadata.create_all)
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        folding = self._folding
        if folding is not None and folding.get_loop() is asyncio.get_running_loop():
            # a fold under way may finish (one short transaction), unless the database does not answer
            await asyncio.wait([folding], timeout=2)
            folding.cancel()
        if self.fast_insert is not None:
            await self.fast_insert.close()
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    @functools.cached_property
    def _upsert(self) -> Any:
        """INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE newer: built once, compiled once."""
        statement = self._insert()
        table = Run.__table__  # type: ignore[attr-defined]
        return statement.on_conflict_do_update(
            index_elements=["id"],
            # a run enqueued untraced gets the trace its traced attempt started
            set_={c: getattr(statement.excluded, c) for c in MUTABLE}
            | {"trace_id": func.coalesce(table.c.trace_id, statement.excluded.trace_id)},
            where=table.c.version < statement.excluded.version,
        )

    def _insert(self, model: Any = Run) -> Any:
        table = model.__table__
        return (sqlite_insert if self.is_sqlite else postgresql_insert)(table)

    async def insert_many(self, runs: list[Run] | list[dict[str, Any]]) -> None:
        """Record new runs. A run the worker already recorded (it can be first) keeps the worker's state
        and gains what only the enqueue knows."""
        if not runs:
            return
        rows, side = _split_big([run.model_dump() if isinstance(run, Run) else run for run in runs])
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
        return self._insert(RunArguments).on_conflict_do_nothing(index_elements=["run_id"])

    @functools.cached_property
    def _insert_new(self) -> Any:
        statement = self._insert()
        table = Run.__table__  # type: ignore[attr-defined]
        return statement.on_conflict_do_update(
            index_elements=["id"],
            set_={c: getattr(statement.excluded, c) for c in ENQUEUE_ONLY}
            | {"trace_id": func.coalesce(statement.excluded.trace_id, table.c.trace_id)},
        )

    async def update_many(self, updates: list[dict[str, Any]]) -> None:
        """Write full states of runs (each with `id`, `version` and the row's required fields), creating
        rows that are missing and never overwriting a row with a newer version.

        Big arguments (a 1 MB document) are written only for a run whose arguments are not stored yet (the
        worker recorded it before its enqueue did); its later updates leave them as they are."""
        if not updates:
            return
        updates, side = _split_big(updates)
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

    def runs(self, *columns: Any) -> Any:
        """SELECT of runs (whole rows, or `columns`) with their big arguments joined."""
        table = Run.__table__  # type: ignore[attr-defined]
        side = RunArguments.__table__  # type: ignore[attr-defined]
        what = columns or (table, side.c.arguments.label("big_arguments"))
        return select(*what).select_from(table.outerjoin(side, side.c.run_id == table.c.id))

    async def _delete_ids(self, conn: Any, ids: builtins.list[str], *where: Any) -> int:
        """Delete these runs (those also matching `where`) and their big arguments; returns how many runs."""
        table = Run.__table__  # type: ignore[attr-defined]
        side = RunArguments.__table__  # type: ignore[attr-defined]
        result = await conn.execute(table.delete().where(table.c.id.in_(ids), *where))
        orphans = [side.c.run_id.in_(ids)]
        if where:  # some of these runs may be kept
            orphans.append(~select(table.c.id).where(table.c.id == side.c.run_id).exists())
        await conn.execute(side.delete().where(*orphans))
        return int(result.rowcount or 0)

    async def get(self, run_id: str) -> Run | None:
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

    async def counts(self) -> dict[str, dict[str, int]]:
        """Runs per function and status: {function: {status: n}}, summed from `run_counts` (the rows
        written since the last fold, and one per function and status before it)."""
        self.fold_counts_now_and_then()
        table = RunCount.__table__  # type: ignore[attr-defined]
        query = select(table.c.function, table.c.status, func.sum(table.c.n)).group_by(table.c.function, table.c.status)
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for function, status, count in (await conn.execute(query)).all():
                if count:  # a function whose runs were all deleted, a status no run has any more
                    out.setdefault(function, {})[status] = int(count)
        return out

    async def fold_counts(self) -> None:
        """Sum `run_counts` into one row per function and status. On Postgres in one statement, which
        deletes only the rows its snapshot sees (a concurrent writer's rows stay for the next fold); on
        SQLite with the write lock held from the start."""
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                await conn.exec_driver_sql(
                    "WITH gone AS (DELETE FROM run_counts RETURNING function, status, n) "
                    "INSERT INTO run_counts (function, status, n) "
                    "SELECT function, status, SUM(n) FROM gone GROUP BY function, status HAVING SUM(n) <> 0"
                )
                return
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
            last = (await conn.exec_driver_sql("SELECT MAX(id) FROM run_counts")).scalar()
            if last is None:
                return
            await conn.execute(
                text(
                    "INSERT INTO run_counts (function, status, n) SELECT function, status, SUM(n) FROM run_counts"
                    " WHERE id <= :last GROUP BY function, status HAVING SUM(n) <> 0"
                ),
                {"last": last},
            )
            await conn.execute(text("DELETE FROM run_counts WHERE id <= :last"), {"last": last})

    def fold_counts_now_and_then(self) -> None:
        """Start a fold of `run_counts` in the background if this process has not folded for FOLD_EVERY
        seconds (no enqueue or worker batch waits on it). A fold that fails is logged: the rows stay and are
        summed all the same, and the next fold takes them."""
        now = time.monotonic()
        if now < self._fold_due or (self._folding is not None and not self._folding.done()):
            return
        self._fold_due = now + FOLD_EVERY
        self._folding = asyncio.create_task(self._fold_logged())

    async def _fold_logged(self) -> None:
        try:
            await self.fold_counts()
        except DATABASE_ERRORS as exc:
            logger.warning("cannot fold the run counts: %s", exc)

    async def throughput(self, minutes: int = 60, now: datetime | None = None) -> builtins.list[dict[str, Any]]:
        """Runs finished per minute over the last `minutes` (oldest first, every minute present):
        [{"minute": "2026-01-01T10:04:00Z", "succeeded": n, "failed": n, "cancelled": n}]. Counted from
        `finished_at`."""
        table = Run.__table__  # type: ignore[attr-defined]
        end = (now or utcnow()).replace(second=0, microsecond=0)
        start = end - timedelta(minutes=minutes - 1)
        buckets = {start + timedelta(minutes=i): dict.fromkeys(FINAL, 0) for i in range(minutes)}
        # on finished_at alone: given the status too, a SQLite store never ANALYZEd takes the status index
        # and reads nearly every run
        query = select(table.c.finished_at, table.c.status).where(table.c.finished_at >= start)
        async with self.engine.connect() as conn:
            for finished_at, status in (await conn.execute(query)).all():
                bucket = buckets.get(finished_at.replace(second=0, microsecond=0))
                if bucket is not None and status in bucket:  # final statuses only, as before
                    bucket[status] += 1
        return [{"minute": minute.isoformat() + "Z", **counts} for minute, counts in buckets.items()]

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

    def _matching(
        self,
        *,
        function: str | None = None,
        status: str | None = None,
        queue: str | None = None,
        search: str | None = None,
        since: datetime | None = None,
    ) -> builtins.list[Any]:
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
        """Runs, newest first, filtered like `list` and also by queue, by `search` (a run id prefix, or
        text in the arguments) and by `since` (finished, or if unfinished enqueued, at or after it)."""
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
        table = Run.__table__  # type: ignore[attr-defined]
        where = self._matching(function=function, status=status, since=since)
        query = self.runs(table.c.id).where(*where).order_by(table.c.enqueued_at.desc(), table.c.id.desc())
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).scalars())

    async def get_many(self, ids: builtins.list[str]) -> dict[str, Run]:
        """The runs with these ids that exist, by id."""
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
        table = Run.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            await self._delete_ids(conn, ids, table.c.version == 0)

    async def finished_counts(self, since: datetime) -> dict[str, dict[str, int]]:
        """Runs that finished at or after `since`, per queue and status: {queue: {status: n}}."""
        table = Run.__table__  # type: ignore[attr-defined]
        query = (
            select(table.c.queue, table.c.status, func.count())
            .where(table.c.finished_at >= since)
            .group_by(table.c.queue, table.c.status)
        )
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for queue, status, count in (await conn.execute(query)).all():
                out.setdefault(queue, {})[status] = count
        return out


def as_run(row: Any) -> Run:
    """A run from a row of `RunStore.runs()`: its arguments from `run_arguments` when they are big."""
    data = dict(row)
    big = data.pop("big_arguments", None)
    if big is not None:
        data["arguments"] = big
    return Run.model_validate(data)


PRUNE_CHUNK = 500  # rows per statement in prune, get_many and bulk operations (SQLite allows 999 parameters)


# --- the schema's revision ------------------------------------------------------------------------------
# Alembic migrations (runtime/store/migrations/versions/) change the schema; a process only reads the revision
# a database is at, with plain SQLAlchemy, so starting up never imports Alembic.

# oldest first; a test checks them against runtime/store/migrations/versions
SCHEMA_REVISIONS = ("0001", "0002", "0003", "0004")
SCHEMA_HEAD = SCHEMA_REVISIONS[-1]
SCHEMA_BASELINE = SCHEMA_REVISIONS[0]  # what 0.1.0 created, before there was an alembic_version table
_SCHEMA_LOCK = 0x72756E73  # pg_advisory_xact_lock key ("runs"): one process at a time creates or upgrades

# Alembic's own bookkeeping table, as Alembic creates it
ALEMBIC_VERSION = Table(
    "alembic_version",
    MetaData(),
    Column("version_num", String(32), nullable=False),
    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)


def stored_revision(conn: Connection) -> str | None:
    """The revision the run store is at: None in an empty database (no `runs` table), the baseline for
    a 0.1.0 database (a `runs` table and no alembic_version), else what alembic_version records."""
    tables = set(inspect(conn).get_table_names())
    if "runs" not in tables:
        return None
    if ALEMBIC_VERSION.name not in tables:
        return SCHEMA_BASELINE
    versions = conn.execute(select(ALEMBIC_VERSION.c.version_num)).scalars().all()
    return versions[0] if len(versions) == 1 else SCHEMA_BASELINE


def check_revision(revision: str) -> None:
    """An older schema is a ConfigError (this code would fail on it); the head, or a revision this code does
    not know (a newer runtime upgraded it; migrations only add), is fine."""
    if revision != SCHEMA_HEAD and revision in SCHEMA_REVISIONS:
        raise ConfigError(
            f"the run store's schema is at {revision}, this runtime needs {SCHEMA_HEAD}: run `runtime db upgrade`"
        )


def lock_schema(conn: Connection) -> None:
    """Hold the schema until this transaction ends, so concurrent creators and upgraders take turns.
    Must come first in the transaction (SQLite's BEGIN IMMEDIATE opens it and takes the write lock)."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})


def stamp(conn: Connection, revision: str) -> None:
    """Record the revision the schema is at, as Alembic does."""
    ALEMBIC_VERSION.create(conn, checkfirst=True)
    conn.execute(delete(ALEMBIC_VERSION))
    conn.execute(insert(ALEMBIC_VERSION).values(version_num=revision))


def create_at_head(conn: Connection) -> str | None:
    """In an empty database, create the run store at the head revision (and the app's tables); returns the
    revision found once the lock was held (None: it was empty and is now at the head)."""
    lock_schema(conn)
    revision = stored_revision(conn)  # another process may have created it while this one waited
    if revision is None:
        SQLModel.metadata.create_all(conn)
        count_runs_from_now_on(conn)
        stamp(conn, SCHEMA_HEAD)
    return revision


DATABASE_ERRORS = (DBAPIError, OSError, ConnectionError)
