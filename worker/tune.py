"""Task arithmetic with lambda chosen on the benchmark's validation split.

Task arithmetic is linear in lambda: ``theta(lambda) = base + lambda * S`` with
``S = sum_i w_i tau_i``. The core's one tuner (``medvec.merging.tuning``) builds ``S`` in
one streaming pass over the vectors, then writes each grid point into one model in
place from the base file and ``S`` (BatchNorm running statistics stay the weighted
mean: lambda never scales them) and scores it; nothing is merged twice and no third
whole model is held. Where the job has calibration images, each grid point's BatchNorm
statistics are recomputed on them before it is evaluated on the validation split, so
lambda is chosen for the model that will be stored. The chosen lambda is merged for
real by the streaming engine (and recalibrated the same way), stored as the version,
and its validation metrics are kept beside the test metrics the evaluate step adds.
The test split is never looked at here. Splits are decoded, and grid points scored,
by the worker process's ``Evaluator``.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from app.models import Benchmark, MergeJob
from app.storage import BlobStore
from medvec.merging.tuning import TUNING_METRIC, LambdaScan, delta_from_files, scan_lambdas
from medvec.models import build_model
from medvec.models.registry import ModelSpec
from medvec.vectors.lazy import LazyTensorReader
from worker.calibrate import recalibrate_on
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.evaluate import Evaluator, store_metrics
from worker.merge import MergeOutcome, claim, compute, finish
from worker.merge_plan import MergePlan
from worker.session import session_scope

log = logging.getLogger(__name__)


def _tuning_benchmark(session: Session, job_id: str) -> Benchmark:
    job = session.get(MergeJob, job_id)
    if job is None:
        raise JobGone(f"merge job {job_id} does not exist")
    if not job.spec.tunes or not job.benchmark_id:
        raise TerminalJobError("lambda tuning needs a lambda grid and a benchmark")
    benchmark = session.get(Benchmark, job.benchmark_id)
    if benchmark is None:
        raise JobGone(f"benchmark {job.benchmark_id} does not exist")
    session.expunge(benchmark)
    return benchmark


def scan_plan(plan: MergePlan, spec: ModelSpec, score: Any) -> LambdaScan:
    """Score every lambda of the plan's grid with ``score(model)``: ``S`` from the vector
    files in one pass, each point written in place from the base file."""
    assert plan.spec.lambda_grid is not None
    delta = delta_from_files(
        plan.base_path,
        plan.vector_paths,
        plan.weights,
        base_sha256=plan.base_sha256,
        rebase=plan.rebase,
    )
    model = build_model(spec)
    with LazyTensorReader(plan.base_path) as base:
        return scan_lambdas(model, base.read, delta, plan.spec.lambda_grid, score)


def tune_merge(
    sessions: sessionmaker[Session],
    store: BlobStore,
    job_id: str,
    settings: WorkerSettings,
    *,
    evaluator: Evaluator,
) -> MergeOutcome:
    """Choose lambda on the validation split, merge with it, store the version and its
    validation metrics; safe to run again for the same job."""
    with session_scope(sessions) as session:
        claimed = claim(session, store, job_id, settings)
        if isinstance(claimed, MergeOutcome):
            return claimed
        benchmark = _tuning_benchmark(session, job_id)
    spec = _spec_of(claimed)
    val = evaluator.split(store, benchmark, "val", spec)
    source = claimed.calibration
    images = evaluator.split(store, source, source.split, spec) if source else None

    def score(model: torch.nn.Module) -> dict[str, Any]:
        if source is not None and images is not None:
            recalibrate_on(model, images, source, settings.eval_batch_size)
        return evaluator.evaluate(model, val, spec).model_dump()

    scan = scan_plan(claimed, spec, score)
    chosen = scan.chosen
    tuning = {
        "metric": TUNING_METRIC,
        "split": "val",
        "benchmark_id": benchmark.id,
        "recalibrated_on": source.benchmark_id if source else None,
        "scores": scan.metric_by_lambda(),
        "lambda": chosen,
    }
    log.info("merge job %s: lambda %.3g chosen from %s", job_id, chosen, tuning["scores"])
    tuned = claimed.spec.with_lambda(chosen)
    plan = replace(
        claimed,
        spec=tuned,
        provenance={**claimed.provenance, "params": dict(tuned.params)},
    )
    computed = compute(plan, store, evaluator, settings)
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id)
        assert job is not None
        job.params = dict(tuned.params)
        job.tuning = tuning
        outcome = finish(session, plan, computed, settings)
        if outcome.ran and outcome.version_id:
            store_metrics(session, outcome.version_id, benchmark.id, "val", scan.best)
    return outcome


def _spec_of(plan: MergePlan) -> ModelSpec:
    from medvec.models import read_model_spec

    return read_model_spec(plan.base_path)
