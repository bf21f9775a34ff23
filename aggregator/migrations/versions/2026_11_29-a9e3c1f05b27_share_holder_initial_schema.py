"""share holder initial schema

Revision ID: a9e3c1f05b27
Revises:
Create Date: 2026-11-29 10:40:50.863641
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = "a9e3c1f05b27"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    _create_agg_audit_events()
    _create_agg_shares()
    _create_agg_summed_sets()
    _create_agg_tokens()
    _create_agg_uploads()


def _create_agg_audit_events() -> None:
    op.create_table(
        "agg_audit_events",
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agg_audit_events")),
    )
    with op.batch_alter_table("agg_audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agg_audit_events_action"), ["action"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_agg_audit_events_created_at"), ["created_at"], unique=False
        )


def _create_agg_shares() -> None:
    op.create_table(
        "agg_shares",
        sa.Column("pair_id", sa.String(length=32), nullable=False),
        sa.Column("hospital", sa.String(length=200), nullable=False),
        sa.Column("base_sha256", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agg_shares")),
        sa.UniqueConstraint("pair_id", name=op.f("uq_agg_shares_pair_id")),
    )
    with op.batch_alter_table("agg_shares", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agg_shares_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_agg_shares_hospital"), ["hospital"], unique=False)
        batch_op.create_index(batch_op.f("ix_agg_shares_sha256"), ["sha256"], unique=False)


def _create_agg_summed_sets() -> None:
    op.create_table(
        "agg_summed_sets",
        sa.Column("request_id", sa.String(length=200), nullable=False),
        sa.Column("members", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agg_summed_sets")),
        sa.UniqueConstraint("request_id", name=op.f("uq_agg_summed_sets_request_id")),
    )
    with op.batch_alter_table("agg_summed_sets", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_agg_summed_sets_created_at"), ["created_at"], unique=False
        )


def _create_agg_tokens() -> None:
    op.create_table(
        "agg_tokens",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column(
            "role",
            sa.Enum("admin", "hospital", "registry", name="aggrole", native_enum=False, length=20),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agg_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_agg_tokens_token_hash")),
    )
    with op.batch_alter_table("agg_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agg_tokens_created_at"), ["created_at"], unique=False)


def _create_agg_uploads() -> None:
    op.create_table(
        "agg_uploads",
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open", "completed", "expired", name="uploadstatus", native_enum=False, length=20
            ),
            nullable=False,
        ),
        sa.Column("expires_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("share_id", sa.String(length=36), nullable=True),
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agg_uploads")),
    )
    with op.batch_alter_table("agg_uploads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_agg_uploads_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_agg_uploads_owner"), ["owner"], unique=False)
        batch_op.create_index(batch_op.f("ix_agg_uploads_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_agg_uploads_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agg_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agg_uploads_status"))
        batch_op.drop_index(batch_op.f("ix_agg_uploads_sha256"))
        batch_op.drop_index(batch_op.f("ix_agg_uploads_owner"))
        batch_op.drop_index(batch_op.f("ix_agg_uploads_created_at"))

    op.drop_table("agg_uploads")
    with op.batch_alter_table("agg_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agg_tokens_created_at"))

    op.drop_table("agg_tokens")
    with op.batch_alter_table("agg_summed_sets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agg_summed_sets_created_at"))

    op.drop_table("agg_summed_sets")
    with op.batch_alter_table("agg_shares", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agg_shares_sha256"))
        batch_op.drop_index(batch_op.f("ix_agg_shares_hospital"))
        batch_op.drop_index(batch_op.f("ix_agg_shares_created_at"))

    op.drop_table("agg_shares")
    with op.batch_alter_table("agg_audit_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_agg_audit_events_created_at"))
        batch_op.drop_index(batch_op.f("ix_agg_audit_events_action"))

    op.drop_table("agg_audit_events")
