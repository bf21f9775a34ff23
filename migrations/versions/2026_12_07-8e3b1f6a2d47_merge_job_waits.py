"""merge jobs can wait for the share holder: since when, and when they are tried again

Revision ID: 8e3b1f6a2d47
Revises: 5c4ed45261d7
Create Date: 2026-12-07 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '8e3b1f6a2d47'
down_revision: str | Sequence[str] | None = '5c4ed45261d7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('waiting_since', app.db.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column('retry_at', app.db.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.drop_column('retry_at')
        batch_op.drop_column('waiting_since')
