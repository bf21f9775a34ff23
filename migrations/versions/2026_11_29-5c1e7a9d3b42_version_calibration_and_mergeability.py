"""model versions record BatchNorm calibration and mergeability

Revision ID: 5c1e7a9d3b42
Revises: a69d1b20dce7
Create Date: 2026-11-29 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '5c1e7a9d3b42'
down_revision: str | Sequence[str] | None = 'a69d1b20dce7'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('calibration', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('mergeability', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('mergeability')
        batch_op.drop_column('calibration')
