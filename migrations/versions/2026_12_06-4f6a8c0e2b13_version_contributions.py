"""model versions keep each input hospital's contribution (leave-one-out on validation)

Revision ID: 4f6a8c0e2b13
Revises: 9d4c2e7b1a58
Create Date: 2026-12-03 11:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '4f6a8c0e2b13'
down_revision: str | Sequence[str] | None = '9d4c2e7b1a58'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contributions', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('contributions')
