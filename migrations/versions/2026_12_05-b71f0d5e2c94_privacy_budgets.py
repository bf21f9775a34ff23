"""per-hospital privacy budgets (the privacy ledger's limit) and console sessions

Revision ID: b71f0d5e2c94
Revises: e4a2c7d91b38
Create Date: 2026-12-05 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = 'b71f0d5e2c94'
down_revision: str | Sequence[str] | None = 'e4a2c7d91b38'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'privacy_budgets',
        sa.Column('hospital_id', sa.String(length=36), nullable=False),
        sa.Column('epsilon', sa.Float(), nullable=False),
        sa.Column('delta', sa.Float(), nullable=False),
        sa.Column('set_by', sa.String(length=200), nullable=False),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['hospital_id'],
            ['hospitals.id'],
            name=op.f('fk_privacy_budgets_hospital_id_hospitals'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('hospital_id', name=op.f('pk_privacy_budgets')),
    )
    with op.batch_alter_table('privacy_budgets', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_privacy_budgets_created_at'), ['created_at'], unique=False
        )

    op.create_table(
        'console_sessions',
        sa.Column('secret_hash', sa.String(length=64), nullable=False),
        sa.Column('token_id', sa.String(length=36), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('expires_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('ended_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('ip', sa.String(length=64), nullable=True),
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ['token_id'],
            ['api_tokens.id'],
            name=op.f('fk_console_sessions_token_id_api_tokens'),
            ondelete='CASCADE',
        ),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions')),
        sa.UniqueConstraint('secret_hash', name=op.f('uq_console_sessions_secret_hash')),
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f('ix_console_sessions_created_at'), ['created_at'], unique=False
        )
        batch_op.create_index(
            batch_op.f('ix_console_sessions_expires_at'), ['expires_at'], unique=False
        )
        batch_op.create_index(
            batch_op.f('ix_console_sessions_token_id'), ['token_id'], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_token_id'))
        batch_op.drop_index(batch_op.f('ix_console_sessions_expires_at'))
        batch_op.drop_index(batch_op.f('ix_console_sessions_created_at'))
    op.drop_table('console_sessions')
    with op.batch_alter_table('privacy_budgets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_privacy_budgets_created_at'))
    op.drop_table('privacy_budgets')
