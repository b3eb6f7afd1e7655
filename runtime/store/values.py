"""What a run record holds, without its table classes: the statuses a run goes through, the column groups, times
in naive UTC, results as JSON, and the errors a database raises. A worker writes its records with these alone
(runtime/store/runs.py imports the SQLModel classes of runtime/store/models.py where a statement needs them)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

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
    "waiting_for",
)
# the columns only the enqueue knows (a worker's update that lands first leaves them at their defaults)
ENQUEUE_ONLY = ("scheduled_for", "replay_of", "queue", "trace_id", "deadline", "idempotency_key", "parent")
STATUSES = ("scheduled", "queued", "running", "retrying", "waiting", "succeeded", "failed", "cancelled", "skipped")
# skipped: never run (a rate limit turned it away at enqueue); final from its first write, reason in last_error
FINAL = ("succeeded", "failed", "cancelled", "skipped")


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def from_timestamp(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).replace(tzinfo=None)


def iso(value: datetime | float | None) -> str | None:
    """A time as every JSON answer shows it: ISO 8601 with microseconds and the UTC offset,
    `2026-12-06T22:10:00.123456+00:00`. Takes a datetime (naive ones are UTC) or Unix seconds."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    else:
        moment = datetime.fromtimestamp(float(value), UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def to_jsonable(value: Any) -> Any:
    """A task's return value as JSON-able data (pydantic models dumped; the rest by repr)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def database_errors() -> tuple[type[BaseException], ...]:
    """What a database that is down, unreachable or refusing raises. A function, so that `except database_errors():`
    imports SQLAlchemy (whose DBAPIError the store raises) only once something is being caught: a worker's writes
    go through the drivers themselves, and it imports no SQLAlchemy before its first task."""
    from sqlalchemy.exc import DBAPIError

    return (DBAPIError, OSError, ConnectionError)
