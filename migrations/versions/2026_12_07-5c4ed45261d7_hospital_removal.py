"""hospitals can be removed: their row and vectors stay, merges and running sums skip them

Revision ID: 5c4ed45261d7
Revises: 4f6a8c0e2b13
Create Date: 2026-12-07 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '5c4ed45261d7'
down_revision: str | Sequence[str] | None = '4f6a8c0e2b13'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('hospitals', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('removed_at', app.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('hospitals', schema=None) as batch_op:
        batch_op.drop_column('removed_at')
