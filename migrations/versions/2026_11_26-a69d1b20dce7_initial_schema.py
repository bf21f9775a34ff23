"""initial schema

Revision ID: a69d1b20dce7
Revises:
Create Date: 2026-11-26 04:02:36.044478
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = 'a69d1b20dce7'
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('audit_events',
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('actor_token_id', sa.String(length=36), nullable=True),
    sa.Column('hospital_id', sa.String(length=36), nullable=True),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('target_type', sa.String(length=50), nullable=True),
    sa.Column('target_id', sa.String(length=64), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_events'))
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_events_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_actor_token_id'), ['actor_token_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_hospital_id'), ['hospital_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_events_target_id'), ['target_id'], unique=False)

    op.create_table('base_models',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('arch', sa.String(length=100), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('provenance', sa.JSON(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('generation', sa.Integer(), nullable=False),
    sa.Column('parent_id', sa.String(length=36), nullable=True),
    sa.Column('source_version_id', sa.String(length=36), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['base_models.id'], name=op.f('fk_base_models_parent_id_base_models'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_base_models')),
    sa.UniqueConstraint('sha256', name=op.f('uq_base_models_sha256')),
    sa.UniqueConstraint('source_version_id', name=op.f('uq_base_models_source_version_id'))
    )
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_base_models_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_base_models_generation'), ['generation'], unique=False)

    op.create_table('benchmarks',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('num_classes', sa.Integer(), nullable=False),
    sa.Column('sizes', sa.JSON(), nullable=False),
    sa.Column('image_shape', sa.JSON(), nullable=False),
    sa.Column('info', sa.JSON(), nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_benchmarks')),
    sa.UniqueConstraint('name', name=op.f('uq_benchmarks_name'))
    )
    with op.batch_alter_table('benchmarks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_benchmarks_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_benchmarks_sha256'), ['sha256'], unique=False)

    op.create_table('hospitals',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hospitals')),
    sa.UniqueConstraint('name', name=op.f('uq_hospitals_name'))
    )
    with op.batch_alter_table('hospitals', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hospitals_created_at'), ['created_at'], unique=False)

    op.create_table('api_tokens',
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.Enum('admin', 'hospital', name='role', native_enum=False, length=20), nullable=False),
    sa.Column('hospital_id', sa.String(length=36), nullable=True),
    sa.Column('last_used_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'], name=op.f('fk_api_tokens_hospital_id_hospitals'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_tokens_token_hash'))
    )
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_tokens_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_api_tokens_hospital_id'), ['hospital_id'], unique=False)

    op.create_table('data_vectors',
    sa.Column('hospital_id', sa.String(length=36), nullable=False),
    sa.Column('base_id', sa.String(length=36), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('norm', sa.Double(), nullable=True),
    sa.Column('num_samples', sa.Integer(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('received', 'validated', 'rejected', 'superseded', name='vectorstatus', native_enum=False, length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('superseded_by_id', sa.String(length=36), nullable=True),
    sa.Column('superseded_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['base_models.id'], name=op.f('fk_data_vectors_base_id_base_models'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'], name=op.f('fk_data_vectors_hospital_id_hospitals'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['superseded_by_id'], ['data_vectors.id'], name=op.f('fk_data_vectors_superseded_by_id_data_vectors'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_data_vectors')),
    sa.UniqueConstraint('hospital_id', 'sha256', name=op.f('uq_data_vectors_hospital_id_sha256'))
    )
    with op.batch_alter_table('data_vectors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_data_vectors_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_data_vectors_created_at'), ['created_at'], unique=False)
        batch_op.create_index('ix_data_vectors_hospital_base_status', ['hospital_id', 'base_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_data_vectors_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_data_vectors_status'), ['status'], unique=False)

    op.create_table('model_versions',
    sa.Column('base_id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=True),
    sa.Column('strategy', sa.String(length=50), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.Enum('candidate', 'staging', 'production', 'archived', name='versionstatus', native_enum=False, length=20), nullable=False),
    sa.Column('production_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rolled_back_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['base_models.id'], name=op.f('fk_model_versions_base_id_base_models'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions'))
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_status'), ['status'], unique=False)

    # base_models <-> model_versions is a cycle: add this foreign key once both exist
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.create_foreign_key(batch_op.f('fk_base_models_source_version_id_model_versions'), 'model_versions', ['source_version_id'], ['id'], ondelete='RESTRICT')

    op.create_table('evaluations',
    sa.Column('version_id', sa.String(length=36), nullable=False),
    sa.Column('benchmark_id', sa.String(length=36), nullable=False),
    sa.Column('split', sa.String(length=20), nullable=False),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'completed', 'failed', name='evaluationstatus', native_enum=False, length=20), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['benchmark_id'], ['benchmarks.id'], name=op.f('fk_evaluations_benchmark_id_benchmarks'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_evaluations_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_evaluations')),
    sa.UniqueConstraint('version_id', 'benchmark_id', 'split', name=op.f('uq_evaluations_version_id_benchmark_id_split'))
    )
    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_evaluations_benchmark_id'), ['benchmark_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_evaluations_version_id'), ['version_id'], unique=False)

    op.create_table('merge_jobs',
    sa.Column('base_id', sa.String(length=36), nullable=False),
    sa.Column('strategy', sa.String(length=50), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('selection', sa.JSON(), nullable=False),
    sa.Column('benchmark_id', sa.String(length=36), nullable=True),
    sa.Column('inputs_hash', sa.String(length=64), nullable=False),
    sa.Column('status', sa.Enum('queued', 'running', 'succeeded', 'failed', name='jobstatus', native_enum=False, length=20), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('version_id', sa.String(length=36), nullable=True),
    sa.Column('requested_by', sa.String(length=200), nullable=True),
    sa.Column('started_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_id'], ['base_models.id'], name=op.f('fk_merge_jobs_base_id_base_models'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['benchmark_id'], ['benchmarks.id'], name=op.f('fk_merge_jobs_benchmark_id_benchmarks'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_merge_jobs_version_id_model_versions'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_merge_jobs')),
    sa.UniqueConstraint('inputs_hash', name=op.f('uq_merge_jobs_inputs_hash'))
    )
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_merge_jobs_base_id'), ['base_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_merge_jobs_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_merge_jobs_status'), ['status'], unique=False)

    op.create_table('upload_sessions',
    sa.Column('hospital_id', sa.String(length=36), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('offset', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.Enum('open', 'completed', 'expired', name='uploadstatus', native_enum=False, length=20), nullable=False),
    sa.Column('expires_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('vector_id', sa.String(length=36), nullable=True),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hospital_id'], ['hospitals.id'], name=op.f('fk_upload_sessions_hospital_id_hospitals'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['vector_id'], ['data_vectors.id'], name=op.f('fk_upload_sessions_vector_id_data_vectors'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_upload_sessions'))
    )
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_upload_sessions_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_expires_at'), ['expires_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_hospital_id'), ['hospital_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_upload_sessions_status'), ['status'], unique=False)

    op.create_table('version_inputs',
    sa.Column('version_id', sa.String(length=36), nullable=False),
    sa.Column('vector_id', sa.String(length=36), nullable=False),
    sa.Column('weight', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['vector_id'], ['data_vectors.id'], name=op.f('fk_version_inputs_vector_id_data_vectors'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'], name=op.f('fk_version_inputs_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('version_id', 'vector_id', name=op.f('pk_version_inputs'))
    )
    with op.batch_alter_table('version_inputs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_version_inputs_vector_id'), ['vector_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('version_inputs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_version_inputs_vector_id'))

    op.drop_table('version_inputs')
    with op.batch_alter_table('upload_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_upload_sessions_status'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_sha256'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_hospital_id'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_expires_at'))
        batch_op.drop_index(batch_op.f('ix_upload_sessions_created_at'))

    op.drop_table('upload_sessions')
    with op.batch_alter_table('merge_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_merge_jobs_status'))
        batch_op.drop_index(batch_op.f('ix_merge_jobs_created_at'))
        batch_op.drop_index(batch_op.f('ix_merge_jobs_base_id'))

    op.drop_table('merge_jobs')
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_base_models_source_version_id_model_versions'), type_='foreignkey')

    with op.batch_alter_table('evaluations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_evaluations_version_id'))
        batch_op.drop_index(batch_op.f('ix_evaluations_status'))
        batch_op.drop_index(batch_op.f('ix_evaluations_created_at'))
        batch_op.drop_index(batch_op.f('ix_evaluations_benchmark_id'))

    op.drop_table('evaluations')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_versions_status'))
        batch_op.drop_index(batch_op.f('ix_model_versions_sha256'))
        batch_op.drop_index(batch_op.f('ix_model_versions_created_at'))
        batch_op.drop_index(batch_op.f('ix_model_versions_base_id'))

    op.drop_table('model_versions')
    with op.batch_alter_table('data_vectors', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_data_vectors_status'))
        batch_op.drop_index(batch_op.f('ix_data_vectors_sha256'))
        batch_op.drop_index('ix_data_vectors_hospital_base_status')
        batch_op.drop_index(batch_op.f('ix_data_vectors_created_at'))
        batch_op.drop_index(batch_op.f('ix_data_vectors_base_id'))

    op.drop_table('data_vectors')
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_tokens_hospital_id'))
        batch_op.drop_index(batch_op.f('ix_api_tokens_created_at'))

    op.drop_table('api_tokens')
    with op.batch_alter_table('hospitals', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hospitals_created_at'))

    op.drop_table('hospitals')
    with op.batch_alter_table('benchmarks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_benchmarks_sha256'))
        batch_op.drop_index(batch_op.f('ix_benchmarks_created_at'))

    op.drop_table('benchmarks')
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_base_models_generation'))
        batch_op.drop_index(batch_op.f('ix_base_models_created_at'))

    op.drop_table('base_models')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_events_target_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_hospital_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_created_at'))
        batch_op.drop_index(batch_op.f('ix_audit_events_actor_token_id'))
        batch_op.drop_index(batch_op.f('ix_audit_events_action'))

    op.drop_table('audit_events')
