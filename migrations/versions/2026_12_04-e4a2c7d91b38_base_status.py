"""bases carry a status: a worker checks the architecture before a base takes vectors

Revision ID: e4a2c7d91b38
Revises: 3b9e6c2a7f15
Create Date: 2026-12-04 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'e4a2c7d91b38'
down_revision: str | Sequence[str] | None = '3b9e6c2a7f15'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # bases registered before this revision passed the architecture check in the API
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                'status',
                sa.Enum(
                    'verifying', 'ready', 'rejected', name='basestatus', native_enum=False,
                    create_constraint=False, length=20,
                ),
                server_default='ready',
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column('reason', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.drop_column('reason')
        batch_op.drop_column('status')
