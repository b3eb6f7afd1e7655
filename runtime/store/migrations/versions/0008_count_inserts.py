"""Postgres counts a bulk enqueue's new runs once per function and status, not once a run: the `runs` insert row
trigger that keeps `run_counts` skips the rows of a transaction that counts them itself (`SET LOCAL runs.counted =
'on'`: runtime/store/postgres_insert.py `PostgresInsert.insert`, one statement for the batch's rows and its
counts). Every other insert (an enqueue's one run, a worker's upsert, one by hand) is counted by the trigger as
before. SQLite: nothing changes (its bulk insert counts itself, runtime/store/bulk_counts.py).

The upgrade replaces the trigger in its transaction, which locks `runs` as 0007's does: no write falls between the
two.
"""

from __future__ import annotations

from alembic import op

from runtime.store.counting import POSTGRES_INSERT_BY_ROW, POSTGRES_INSERT_UNLESS_COUNTED

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _replace(trigger: tuple[str, ...]) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")  # no write between the drop and the create
    for statement in ("DROP TRIGGER IF EXISTS runs_count ON runs", *trigger):
        conn.exec_driver_sql(statement)


def upgrade() -> None:
    _replace(POSTGRES_INSERT_UNLESS_COUNTED)


def downgrade() -> None:
    _replace(POSTGRES_INSERT_BY_ROW)
