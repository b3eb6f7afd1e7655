"""Second wave: queues, error types, traces, deadlines, idempotency keys, and list indexes.

Every new column is nullable or has a server default, so rows written before (and writers that do not
know a column) stay valid. The composite indexes serve the newest-first lists filtered by status or by
function, and replace the single-column indexes they start with.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("queue", sa.String(64), nullable=False, server_default="default"))
    op.add_column("runs", sa.Column("error_type", sa.String(200), nullable=True))
    op.add_column("runs", sa.Column("trace_id", sa.String(32), nullable=True))
    op.add_column("runs", sa.Column("deadline", sa.DateTime(), nullable=True))
    op.add_column("runs", sa.Column("idempotency_key", sa.String(200), nullable=True))
    op.create_index("ix_runs_idempotency_key", "runs", ["idempotency_key"])
    op.create_index("ix_runs_status_enqueued_at_id", "runs", ["status", "enqueued_at", "id"])
    op.create_index("ix_runs_function_enqueued_at_id", "runs", ["function", "enqueued_at", "id"])
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_function", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_function", "runs", ["function"])
    op.create_index("ix_runs_status", "runs", ["status"])
    op.drop_index("ix_runs_function_enqueued_at_id", table_name="runs")
    op.drop_index("ix_runs_status_enqueued_at_id", table_name="runs")
    op.drop_index("ix_runs_idempotency_key", table_name="runs")
    with op.batch_alter_table("runs") as batch:  # SQLite drops columns by copying the table
        for column in ("idempotency_key", "deadline", "trace_id", "error_type", "queue"):
            batch.drop_column(column)
