"""running sums: per base and weighting, sum_i w_i tau_i as a blob with its members

Revision ID: 9d4c2e7b1a58
Revises: 3b8e5f0a9c21
Create Date: 2026-12-03 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '9d4c2e7b1a58'
down_revision: str | Sequence[str] | None = '3b8e5f0a9c21'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'running_sums',
        sa.Column('base_id', sa.String(length=36), nullable=False),
        sa.Column('weighting', sa.String(length=20), nullable=False),
        sa.Column('revision', sa.Integer(), nullable=False),
        sa.Column('total_weight', sa.Float(), nullable=False),
        sa.Column('checked_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('drift', sa.Float(), nullable=True),
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['base_id'],
            ['base_models.id'],
            name=op.f('fk_running_sums_base_id_base_models'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_running_sums')),
        sa.UniqueConstraint(
            'base_id', 'weighting', name=op.f('uq_running_sums_base_id_weighting')
        ),
    )
    with op.batch_alter_table('running_sums', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_running_sums_created_at'), ['created_at'], unique=False
        )
    op.create_table(
        'running_sum_members',
        sa.Column('sums_id', sa.String(length=36), nullable=False),
        sa.Column('vector_id', sa.String(length=36), nullable=False),
        sa.Column('weight', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ['sums_id'],
            ['running_sums.id'],
            name=op.f('fk_running_sum_members_sums_id_running_sums'),
            ondelete='CASCADE',
        ),
        sa.ForeignKeyConstraint(
            ['vector_id'],
            ['data_vectors.id'],
            name=op.f('fk_running_sum_members_vector_id_data_vectors'),
            ondelete='RESTRICT',
        ),
        sa.PrimaryKeyConstraint('sums_id', 'vector_id', name=op.f('pk_running_sum_members')),
    )
    with op.batch_alter_table('running_sum_members', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_running_sum_members_vector_id'), ['vector_id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('running_sum_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_running_sum_members_vector_id'))
    op.drop_table('running_sum_members')
    with op.batch_alter_table('running_sums', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_running_sums_created_at'))
    op.drop_table('running_sums')
