"""Big arguments out of the run's row: the `run_arguments` table.

A run's arguments over BIG_ARGUMENTS characters (runtime/store/runs.py) are kept in `run_arguments`, written once,
and its `runs` row holds `{}`: SQLite rewrites a whole row, overflow pages included, on every update, and a
run's row is updated at each step. Rows written before keep their arguments where they are (every read
takes `run_arguments` first, then the row's own), so the upgrade moves nothing.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_arguments",
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("arguments", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("run_id"),
    )


def downgrade() -> None:
    op.execute(
        "UPDATE runs SET arguments = (SELECT a.arguments FROM run_arguments AS a WHERE a.run_id = runs.id) "
        "WHERE id IN (SELECT run_id FROM run_arguments)"
    )
    op.drop_table("run_arguments")
