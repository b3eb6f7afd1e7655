"""`runs.parent`: the run that invoked this one (`ctx.invoke`), kept in the record so that a message sent again
from it (the reconciler, the outbox) still tells the parent when the child ends."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("parent", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("parent")
