"""The worker's upsert as the driver runs it (runtime/store/upsert_sql.py, built without SQLAlchemy) is SQLAlchemy's
compilation of the engine's statement, and binds every value as SQLAlchemy would."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from runtime.store.runs import RunStore
from runtime.store.sqlite_insert import bind_steps
from runtime.store.upsert_sql import upsert_sql

URLS = {"sqlite": "sqlite+aiosqlite:///{}/runs.db", "postgresql": "postgresql+asyncpg://user@localhost/runs"}
ROWS: list[dict[str, Any]] = [
    {  # as a worker's update gives it: no enqueue-only columns
        "id": "r1",
        "function": "f",
        "arguments": {"a": 1, "text": "é\u0000"},
        "status": "succeeded",
        "attempts": 2,
        "max_attempts": 3,
        "last_error": None,
        "enqueued_at": datetime(2026, 12, 7, 14, 0, 0),
        "started_at": datetime(2026, 12, 7, 14, 0, 1, 5),
        "finished_at": datetime(2026, 12, 7, 14, 0, 2, 123456),
        "result": None,
        "history": [{"attempt": 2, "started_at": 1.5, "error": None}],
        "version": 17653000000002,
        "error_type": None,
        "waiting_for": None,
    },
    {  # every column given
        "id": "r2",
        "function": "g",
        "arguments": {},
        "status": "waiting",
        "attempts": 1,
        "max_attempts": 1,
        "last_error": "boom",
        "enqueued_at": datetime(1999, 1, 2, 3, 4, 5),
        "scheduled_for": datetime(2026, 1, 1),
        "started_at": None,
        "finished_at": None,
        "result": [1, "two", {"three": 3.0}],
        "history": [],
        "replay_of": "r0",
        "version": 1,
        "queue": "q",
        "error_type": "ValueError",
        "trace_id": "t" * 32,
        "deadline": datetime(2027, 1, 1, 0, 0, 0, 1),
        "idempotency_key": "k",
        "waiting_for": "sleep 'x'",
        "parent": "p",
    },
]


@pytest.mark.parametrize("dialect", URLS)
def test_the_upsert_text_is_sqlalchemys(dialect: str, tmp_path: Any) -> None:
    store = RunStore(URLS[dialect].format(tmp_path))
    sql, binder = upsert_sql(dialect)
    their_sql, their_binder = bind_steps(store._upsert, store.engine.dialect)
    assert sql == their_sql
    ours = [(name, default) for name, _, default in binder.steps]
    assert ours == [(name, default) for name, _, default in their_binder.steps]
    for row in ROWS:
        assert binder(row) == their_binder(row)
    assert store._upsert_sql == (sql, binder)  # what the store's driver runs
