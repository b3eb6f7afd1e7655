"""Postgres counts a batch's changed and deleted runs once a statement, not once a row: the `runs` triggers that
keep `run_counts` on UPDATE and DELETE are statement-level, reading the statement's transition tables (a worker's
batch of run updates is one statement: runtime/store/runs.py `_fast_upsert`). An insert (an enqueue, one run) keeps
its row trigger. SQLite has no statement-level triggers: nothing changes there.

The upgrade replaces the triggers in its transaction, which locks `runs`: no write falls between the two.
"""

from __future__ import annotations

from alembic import op

from runtime.store.counting import DROP_COUNT_TRIGGERS, POSTGRES_CHANGES, POSTGRES_INSERT_BY_ROW

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# what 0004 created on Postgres: one row trigger for every change
ROW_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION runs_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO run_counts (function, status, n) VALUES (NEW.function, NEW.status, 1);
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO run_counts (function, status, n) VALUES (OLD.function, OLD.status, -1);
    ELSIF OLD.status IS DISTINCT FROM NEW.status OR OLD.function IS DISTINCT FROM NEW.function THEN
        INSERT INTO run_counts (function, status, n)
        VALUES (OLD.function, OLD.status, -1), (NEW.function, NEW.status, 1);
    END IF;
    RETURN NULL;
END $$""",
    "CREATE TRIGGER runs_count AFTER INSERT OR UPDATE OF function, status OR DELETE ON runs"
    " FOR EACH ROW EXECUTE FUNCTION runs_count()",
)


def _replace(triggers: tuple[str, ...]) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql("LOCK TABLE runs IN SHARE ROW EXCLUSIVE MODE")  # no write between the drop and the create
    for statement in (*DROP_COUNT_TRIGGERS["postgresql"], *triggers):
        conn.exec_driver_sql(statement)


def upgrade() -> None:
    _replace((*POSTGRES_INSERT_BY_ROW, *POSTGRES_CHANGES))  # an insert still by a row trigger (0008 changes it)


def downgrade() -> None:
    _replace(ROW_TRIGGERS)
