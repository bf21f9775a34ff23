"""data vectors keep their screening statistics (quarantined is a new status value)

Revision ID: 3b9e6c2a7f15
Revises: 7d2f4b8e1c60
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "3b9e6c2a7f15"
down_revision: str | Sequence[str] | None = "7d2f4b8e1c60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("data_vectors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("screening", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("screened_at", app.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # no status before this revision keeps a vector out of merges but ``rejected``
    op.execute("UPDATE data_vectors SET status = 'rejected' WHERE status = 'quarantined'")
    with op.batch_alter_table("data_vectors", schema=None) as batch_op:
        batch_op.drop_column("screened_at")
        batch_op.drop_column("screening")
