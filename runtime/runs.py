"""Run records: one row per task run (SQLModel), in SQLite or Postgres, written in batches."""

from __future__ import annotations

import asyncio
import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy import JSON, BigInteger, Column, DateTime, Text, event, func, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel

from runtime.errors import ConfigError

# the columns a worker's update writes; the rest are set at enqueue
MUTABLE = ("status", "attempts", "last_error", "started_at", "finished_at", "result", "history", "version")
# the columns only the enqueue knows (a worker's update that lands first leaves them empty)
ENQUEUE_ONLY = ("scheduled_for", "replay_of")
STATUSES = ("scheduled", "queued", "running", "retrying", "succeeded", "failed")
FINAL = ("succeeded", "failed")


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

    id: str = Field(primary_key=True, max_length=32)
    function: str = Field(index=True, max_length=200)
    arguments: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(index=True, max_length=16)
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

    def public(self) -> dict[str, Any]:
        """The run as the API shows it: `id` first, times in ISO 8601 UTC."""
        data = self.model_dump(exclude={"version"})
        for key, value in data.items():
            if isinstance(value, datetime):
                data[key] = value.isoformat(timespec="milliseconds") + "Z"
        return {"id": data.pop("id"), **data}


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
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)

    async def init(self) -> None:
        """Create the table if it does not exist (safe when several processes start at once)."""
        for attempt in range(5):
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(SQLModel.metadata.create_all)
                return
            except (IntegrityError, ProgrammingError, OperationalError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    @functools.cached_property
    def _upsert(self) -> Any:
        """INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE newer: built once, compiled once."""
        statement = self._insert()
        return statement.on_conflict_do_update(
            index_elements=["id"],
            set_={c: getattr(statement.excluded, c) for c in MUTABLE},
            where=Run.__table__.c.version < statement.excluded.version,  # type: ignore[attr-defined]
        )

    def _insert(self) -> Any:
        table = Run.__table__  # type: ignore[attr-defined]
        return (sqlite_insert if self.is_sqlite else postgresql_insert)(table)

    async def insert_many(self, runs: list[Run] | list[dict[str, Any]]) -> None:
        """Record new runs. A run the worker already recorded (it can be first) keeps the worker's state
        and gains what only the enqueue knows."""
        if not runs:
            return
        rows = [run.model_dump() if isinstance(run, Run) else run for run in runs]
        async with self.engine.begin() as conn:
            await conn.execute(self._insert_new, rows)

    @functools.cached_property
    def _insert_new(self) -> Any:
        statement = self._insert()
        return statement.on_conflict_do_update(
            index_elements=["id"], set_={c: getattr(statement.excluded, c) for c in ENQUEUE_ONLY}
        )

    async def update_many(self, updates: list[dict[str, Any]]) -> None:
        """Write full states of runs (each with `id`, `version` and the row's required fields), creating
        rows that are missing and never overwriting a row with a newer version."""
        if not updates:
            return
        async with self.engine.begin() as conn:
            await conn.execute(self._upsert, updates)

    async def get(self, run_id: str) -> Run | None:
        table = Run.__table__  # type: ignore[attr-defined]
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(table).where(table.c.id == run_id))).mappings().first()
        return Run.model_validate(dict(row)) if row else None

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
        query = select(table).order_by(table.c.enqueued_at.desc(), table.c.id.desc())
        if function:
            query = query.where(table.c.function == function)
        if status:
            query = query.where(table.c.status == status)
        if ids is not None:
            query = query.where(table.c.id.in_(ids))
        query = query.limit(limit).offset(offset)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [Run.model_validate(dict(row)) for row in rows]

    async def counts(self) -> dict[str, dict[str, int]]:
        """Runs per function and status: {function: {status: n}}."""
        table = Run.__table__  # type: ignore[attr-defined]
        query = select(table.c.function, table.c.status, func.count()).group_by(table.c.function, table.c.status)
        out: dict[str, dict[str, int]] = {}
        async with self.engine.connect() as conn:
            for function, status, count in (await conn.execute(query)).all():
                out.setdefault(function, {})[status] = count
        return out

    async def delete(self, run_id: str) -> bool:
        table = Run.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            result = await conn.execute(table.delete().where(table.c.id == run_id))
        return bool(result.rowcount)

    async def prune(self, finished_before: datetime) -> int:
        """Delete succeeded runs that finished before the given time (failed ones stay as dead letters)."""
        table = Run.__table__  # type: ignore[attr-defined]
        async with self.engine.begin() as conn:
            result = await conn.execute(
                table.delete().where(table.c.status == "succeeded", table.c.finished_at < finished_before)
            )
        return int(result.rowcount or 0)


DATABASE_ERRORS = (DBAPIError, OSError, ConnectionError)
