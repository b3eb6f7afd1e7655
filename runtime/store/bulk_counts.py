"""A bulk insert of new runs counted by the insert itself: one row of `run_counts` per function and status instead of
one per run from the insert trigger (runtime/store/counting.py keeps the counts), on SQLite and on Postgres."""

from __future__ import annotations

from typing import Any

COUNT_INSERTED = "INSERT INTO run_counts (function, status, n) VALUES (?, ?, ?)"
COUNTED = "runs.counted"  # Postgres: 'on' in a transaction that counts its inserted runs itself (migration 0008)
SET_COUNTED = f"SET LOCAL {COUNTED} = 'on'"


def counted_insert(sql: str) -> str:
    """Postgres: `sql`, an `unnested` insert of runs (runtime/store/postgres_insert.py), counting the runs it inserts,
    in one statement; run in a transaction after SET_COUNTED, so that the insert trigger skips them. A run that was
    there already (the worker recorded it first: the upsert updates it, and that row's version has the updating
    transaction in `xmax`, an inserted one 0) is not new, as the trigger would not have counted it."""
    return (
        f"WITH new AS ({sql} RETURNING function, status, xmax = 0 AS inserted)"
        " INSERT INTO run_counts (function, status, n)"
        " SELECT function, status, COUNT(*) FROM new WHERE inserted GROUP BY function, status"
    )


def insert_counted(conn: Any, sql: str, params: list[tuple[Any, ...]], rows: list[dict[str, Any]]) -> None:
    """SQLite: `sql` (the enqueue's upsert) for each row, its new runs counted once per function and status instead
    of by the insert trigger's row of `run_counts` a run (~18 µs a run). The trigger is dropped and created again
    inside the caller's write transaction (BEGIN IMMEDIATE): no other writer can write without it, and no reader
    sees it gone. A run that was there already (the worker recorded it first: the upsert updates it) or comes
    twice in the batch is not new, as the trigger would not have counted it."""
    trigger = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'runs_count_insert'")
    created = trigger.fetchone()
    if created is None:  # no trigger to stand in for: nothing to count
        conn.executemany(sql, params)
        return
    ids = [row["id"] for row in rows]
    found = conn.execute(f"SELECT id FROM runs WHERE id IN ({','.join('?' * len(ids))})", ids)
    seen = {run_id for (run_id,) in found.fetchall()}
    counts: dict[tuple[str, str], int] = {}
    for row in rows:
        if row["id"] not in seen:
            seen.add(row["id"])
            key = (row["function"], row["status"])
            counts[key] = counts.get(key, 0) + 1
    conn.execute("DROP TRIGGER runs_count_insert")
    conn.executemany(sql, params)
    conn.executemany(COUNT_INSERTED, [(function, status, n) for (function, status), n in counts.items()])
    conn.execute(created[0])
