"""The run store's tables (SQLModel); the values around them are in runtime/store/values.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, String, Text
from sqlmodel import Field, SQLModel

from runtime.store.values import iso


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
    # schema revision 0005: what a `waiting` run waits for ("sleep 'cool-off' until 2026-12-07T06:00:00Z")
    waiting_for: str | None = Field(default=None, sa_column=Column(Text))
    # schema revision 0006: the run that invoked this one (`ctx.invoke`), so a message sent again from the
    # record (the reconciler, the outbox) still tells it when this run ends
    parent: str | None = Field(default=None, max_length=32)

    def duration_ms(self) -> float | None:
        """The run's duration: from its first attempt's start to its end (retry backoffs included); None
        until it has both."""
        if self.started_at is None or self.finished_at is None:
            return None
        return round((self.finished_at - self.started_at).total_seconds() * 1000, 2)

    def time_in_attempts_ms(self) -> float | None:
        """The time its attempts ran, summed (backoffs left out); None before an attempt ended."""
        took = [entry["duration_ms"] for entry in self.history if isinstance(entry.get("duration_ms"), int | float)]
        return round(sum(took), 2) if took else None

    def public(self) -> dict[str, Any]:
        """The run as the API and `--json` show it: `id` first, every time (its attempts' too) as `iso()`,
        and its `duration_ms` and `time_in_attempts_ms`."""
        data = _iso_times(self.model_dump(exclude={"version"}))
        data["history"] = [_public_attempt(entry) for entry in self.history]
        data["duration_ms"] = self.duration_ms()
        data["time_in_attempts_ms"] = self.time_in_attempts_ms()
        return {"id": data.pop("id"), **data}


def _public_attempt(entry: dict[str, Any]) -> dict[str, Any]:
    """A `history[]` entry as the API shows it: its start (Unix seconds in the store) as `iso()`."""
    started = entry.get("started_at")
    return entry | {"started_at": iso(started)} if isinstance(started, int | float) else entry


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


class Step(SQLModel, table=True):
    """A durable function's step, saved once it has an outcome (schema revision 0005): its result as JSON
    text, or its final error. A run that resumes or is retried reads its steps in one query and returns a
    saved step's outcome instead of running it again. `name` carries its occurrence (`charge`, `charge#2`). The
    schema's and the engine's description of the table: its rows are read and shown as StepRecords
    (runtime/store/step_record.py)."""

    __tablename__ = "steps"

    run_id: str = Field(primary_key=True, max_length=32)
    name: str = Field(primary_key=True, max_length=220)
    status: str = Field(max_length=16)  # succeeded | failed
    result: str | None = Field(default=None, sa_column=Column(Text))  # JSON text, as the step returned it
    error_type: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = 1
    started_at: datetime = Field(sa_column=Column(DateTime, nullable=False))
    finished_at: datetime = Field(sa_column=Column(DateTime, nullable=False))


def _iso_times(data: dict[str, Any]) -> dict[str, Any]:
    """A row's values with its datetimes as `iso()`, as every JSON answer shows them."""
    return {key: iso(value) if isinstance(value, datetime) else value for key, value in data.items()}


def as_run(row: Any) -> Run:
    """A run from a row of `RunStore.runs()`: its arguments from `run_arguments` when they are big."""
    data = dict(row)
    big = data.pop("big_arguments", None)
    if big is not None:
        data["arguments"] = big
    return Run.model_validate(data)
