"""evaluations count their deliveries and hold a lease while running

Revision ID: 7d2f4b8e1c60
Revises: 5c1e7a9d3b42
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '7d2f4b8e1c60'
down_revision: str | Sequence[str] | None = '5c1e7a9d3b42'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('attempts', sa.Integer(), server_default='0', nullable=False)
        )
        batch_op.add_column(
            sa.Column('lease_expires_at', app.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_column('lease_expires_at')
        batch_op.drop_column('attempts')
