"""The worker's upsert of run states (RunStore.update_many) as the SQL text and bind steps of each dialect, built
without SQLAlchemy: a worker writes its first records with the driver alone, and imports SQLAlchemy only for what
needs the engine (the dashboard's queries, tracing, big arguments). tests/runtime/store/test_upsert_sql.py checks
the text and the bound values against SQLAlchemy's compilation of the same statement (RunStore._upsert)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from runtime.store.attempt_history import history_columns
from runtime.store.big_arguments import json_dumps
from runtime.store.sqlite_insert import Binder, Step, sqlite_datetime
from runtime.store.values import MUTABLE

_JSON, _TIME = "JSON", "TIMESTAMP WITHOUT TIME ZONE"
# the `runs` table's columns in its order (runtime/store/models.py): name, Postgres type, default for a missing key
COLUMNS: tuple[tuple[str, str, Any], ...] = (
    ("id", "VARCHAR", None),
    ("function", "VARCHAR", None),
    ("arguments", _JSON, None),
    ("status", "VARCHAR", None),
    ("attempts", "INTEGER", 0),
    ("max_attempts", "INTEGER", 1),
    ("last_error", "VARCHAR", None),
    ("enqueued_at", _TIME, None),
    ("scheduled_for", _TIME, None),
    ("started_at", _TIME, None),
    ("finished_at", _TIME, None),
    ("result", _JSON, None),
    ("history", _JSON, None),
    ("replay_of", "VARCHAR", None),
    ("version", "BIGINT", 0),
    ("queue", "VARCHAR", "default"),
    ("error_type", "VARCHAR", None),
    ("trace_id", "VARCHAR", None),
    ("deadline", _TIME, None),
    ("idempotency_key", "VARCHAR", None),
    ("waiting_for", "VARCHAR", None),
    ("parent", "VARCHAR", None),
)


def _json(value: Any) -> str:
    return json_dumps(value)  # None too: a JSON null, as SQLAlchemy's JSON type binds it


@functools.cache
def upsert_sql(dialect: str) -> tuple[str, Binder]:
    """INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE newer, for "sqlite" or "postgresql": the text and, for each
    positional parameter, its column, bind processor and default, as a Binder (runtime/store/sqlite_insert.py)."""
    sqlite = dialect == "sqlite"
    updated = {column: f"excluded.{column}" for column in MUTABLE}
    # a run enqueued untraced gets the trace its traced attempt started
    updated["trace_id"] = "coalesce(runs.trace_id, excluded.trace_id)"
    updated |= history_columns(sqlite)  # an attempt's entry is appended (runtime/store/attempt_history.py)
    names = [name for name, _, _ in COLUMNS]
    if sqlite:
        values = ", ".join("?" for _ in COLUMNS)
    else:
        values = ", ".join(f"${i}::{kind}" for i, (_, kind, _) in enumerate(COLUMNS, 1))
    sets = ", ".join(f"{name} = {updated[name]}" for name in names if name in updated)
    sql = (
        f"INSERT INTO runs ({', '.join(names)}) VALUES ({values}) ON CONFLICT (id) DO UPDATE SET {sets}"
        " WHERE runs.version < excluded.version"
    )
    steps: list[Step] = []
    for name, kind, default in COLUMNS:
        process: Callable[[Any], Any] | None = None
        if kind == _JSON:
            process = _json
        elif kind == _TIME and sqlite:
            process = sqlite_datetime
        steps.append((name, process, default))
    return sql, Binder(steps)
