"""merge jobs keep what a merge means in typed columns, not a JSON bag

``params`` keeps only the strategy's own parameters; the weighting rule, staleness
power, rebase, lambda grid, seed, calibration images and tuning record move to their
own columns (read back as ``medvec.merging.MergeSpec``). Existing rows are split.

Revision ID: 3b8e5f0a9c21
Revises: b71f0d5e2c94
Create Date: 2026-12-03 09:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from alembic.util import CommandError

revision: str = "3b8e5f0a9c21"
down_revision: str | Sequence[str] | None = "b71f0d5e2c94"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: keys of the old ``params`` bag that steered the job and were not the strategy's own
JOB_KEYS = ("seed", "lambda_grid", "tuning", "calibration")
SAMPLE_WEIGHTED = ("weighted_mean",)
UNWEIGHTED = ("median", "trimmed_mean")

jobs = sa.table(
    "merge_jobs",
    sa.column("id", sa.String),
    sa.column("strategy", sa.String),
    sa.column("params", sa.JSON),
    sa.column("selection", sa.JSON),
    sa.column("weighting", sa.String),
    sa.column("staleness_power", sa.Float),
    sa.column("rebase", sa.Boolean),
    sa.column("lambda_grid", sa.JSON),
    sa.column("seed", sa.BigInteger),
    sa.column("calibration_benchmark_id", sa.String),
    sa.column("calibration_split", sa.String),
    sa.column("tuning", sa.JSON),
)


def _weighting(strategy: str) -> str:
    if strategy in SAMPLE_WEIGHTED:
        return "samples"
    return "none" if strategy in UNWEIGHTED else "uniform"


def _split(row: Any) -> dict[str, Any]:
    params = dict(row.params or {})
    selection = dict(row.selection or {})
    calibration = params.get("calibration") or {}
    return {
        "params": {k: v for k, v in params.items() if k not in JOB_KEYS},
        "weighting": _weighting(row.strategy),
        "staleness_power": float(selection.get("staleness_power", 0.5)),
        "rebase": selection.get("stale") == "weight",
        "lambda_grid": params.get("lambda_grid"),
        "seed": int(params.get("seed", 0)),
        "calibration_benchmark_id": calibration.get("benchmark_id"),
        "calibration_split": calibration.get("split"),
        "tuning": params.get("tuning"),
    }


def _online_only() -> None:
    """Existing rows are split in Python, which ``--sql`` cannot render: say what to run."""
    if context.is_offline_mode():
        raise CommandError(
            f"revision {revision} converts existing merge jobs and cannot be rendered as "
            f"SQL: render up to {down_revision} with --sql, run this revision online "
            f"(`medvec-server migrate {revision}`), then render {revision}:head with --sql"
        )


def upgrade() -> None:
    _online_only()
    with op.batch_alter_table("merge_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("weighting", sa.String(length=20), server_default="uniform", nullable=False)
        )
        batch_op.add_column(
            sa.Column("staleness_power", sa.Float(), server_default="0.5", nullable=False)
        )
        batch_op.add_column(
            sa.Column("rebase", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("lambda_grid", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("seed", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(
            sa.Column("calibration_benchmark_id", sa.String(length=36), nullable=True)
        )
        batch_op.add_column(sa.Column("calibration_split", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("tuning", sa.JSON(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_merge_jobs_calibration_benchmark_id_benchmarks"),
            "benchmarks",
            ["calibration_benchmark_id"],
            ["id"],
            ondelete="SET NULL",
        )
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs.c.id, jobs.c.strategy, jobs.c.params, jobs.c.selection))
    for row in rows.all():
        bind.execute(jobs.update().where(jobs.c.id == row.id).values(**_split(row)))


def downgrade() -> None:
    _online_only()
    bind = op.get_bind()
    rows = bind.execute(sa.select(jobs)).all()
    for row in rows:
        params = dict(row.params or {})
        params["seed"] = row.seed
        if row.lambda_grid is not None:
            params["lambda_grid"] = row.lambda_grid
        if row.tuning is not None:
            params["tuning"] = row.tuning
        params["calibration"] = (
            {"benchmark_id": row.calibration_benchmark_id, "split": row.calibration_split}
            if row.calibration_benchmark_id
            else None
        )
        bind.execute(jobs.update().where(jobs.c.id == row.id).values(params=params))
    with op.batch_alter_table("merge_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_merge_jobs_calibration_benchmark_id_benchmarks"), type_="foreignkey"
        )
        for column in (
            "tuning",
            "calibration_split",
            "calibration_benchmark_id",
            "seed",
            "lambda_grid",
            "rebase",
            "staleness_power",
            "weighting",
        ):
            batch_op.drop_column(column)
