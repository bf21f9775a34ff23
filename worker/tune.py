"""Task arithmetic with lambda chosen on the benchmark's validation split.

Task arithmetic is linear in lambda: ``theta(lambda) = base + lambda * S`` with
``S = sum_i w_i tau_i``. The streaming engine computes ``base + S`` once (memory
O(one model) whatever the number of vectors); each grid point is then a cheap
``base + lambda * S`` (BatchNorm running statistics stay the weighted mean: lambda
never scales them). Where the job has calibration images, each grid point's
BatchNorm statistics are recomputed on them before it is evaluated on the
validation split, so lambda is chosen for the model that will be stored. The chosen
lambda is merged for real by the same engine (and recalibrated the same way),
stored as the version, and its validation metrics are kept beside the test metrics
the evaluate step adds. The test split is never looked at here.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import torch
from safetensors.torch import load_file
from sqlalchemy.orm import Session, sessionmaker

from app.models import Benchmark, MergeJob
from app.storage import BlobStore
from medvec.models import build_model
from medvec.models.registry import ModelSpec
from medvec.vectors import is_running_stat
from worker.calibrate import recalibrate_on
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.evaluate import evaluate_model_on, load_benchmark_split, store_metrics
from worker.merge import MergeOutcome, MergePlan, claim, compute, finish
from worker.session import session_scope

log = logging.getLogger(__name__)

TUNING_METRIC = "accuracy"


def _tuning_inputs(session: Session, job_id: str) -> tuple[list[float], Benchmark]:
    job = session.get(MergeJob, job_id)
    if job is None:
        raise JobGone(f"merge job {job_id} does not exist")
    if job.strategy != "task_arithmetic" or not job.benchmark_id:
        raise TerminalJobError("lambda tuning needs task_arithmetic and a benchmark")
    benchmark = session.get(Benchmark, job.benchmark_id)
    if benchmark is None:
        raise JobGone(f"benchmark {job.benchmark_id} does not exist")
    session.expunge(benchmark)
    return [float(x) for x in job.params["lambda_grid"]], benchmark


def _summed_state(
    plan: MergePlan, store: BlobStore
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(base, S)``: the base state and the merged delta at lambda = 1 (the weighted sum of
    the deltas; the weighted mean for running statistics)."""
    from medvec.merging import merge_files

    staged = store.staging_path(f"tune-{plan.job_id}.safetensors")
    try:
        merge_files(
            plan.base_path,
            plan.vector_paths,
            staged,
            strategy="task_arithmetic",
            params={**plan.params, "lambda": 1.0},
            weights=plan.weights,
            seed=plan.seed,
        )
        summed = load_file(str(staged))
    finally:
        staged.unlink(missing_ok=True)
    base = load_file(str(plan.base_path))
    delta = {k: summed[k] - v for k, v in base.items() if v.is_floating_point()}
    return base, delta


def scan_grid(
    base: dict[str, torch.Tensor],
    delta: dict[str, torch.Tensor],
    spec: ModelSpec,
    grid: list[float],
    evaluate: Any,
) -> dict[float, dict[str, Any]]:
    """``evaluate(model)`` of ``base + lambda * delta`` for each lambda of ``grid``; running
    statistics are ``base + delta`` at every lambda, as the engine merges them."""
    model = build_model(spec)
    results: dict[float, dict[str, Any]] = {}
    for lam in grid:
        state = {k: v + _scale(k, lam) * delta[k] if k in delta else v for k, v in base.items()}
        model.load_state_dict(state, strict=True)
        results[lam] = evaluate(model)
    return results


def _scale(key: str, lam: float) -> float:
    return 1.0 if is_running_stat(key) else lam


def best_lambda(results: dict[float, dict[str, Any]], metric: str = TUNING_METRIC) -> float:
    """The lambda with the best ``metric``; ties go to the smaller lambda."""
    return min(results, key=lambda lam: (-float(results[lam][metric]), lam))


def tune_merge(
    sessions: sessionmaker[Session], store: BlobStore, job_id: str, settings: WorkerSettings
) -> MergeOutcome:
    """Choose lambda on the validation split, merge with it, store the version and its
    validation metrics; safe to run again for the same job."""
    with session_scope(sessions) as session:
        claimed = claim(session, store, job_id, settings)
        if isinstance(claimed, MergeOutcome):
            return claimed
        grid, benchmark = _tuning_inputs(session, job_id)
    spec = _spec_of(claimed)
    val = load_benchmark_split(store, benchmark, "val", spec)
    source = claimed.calibration
    images = load_benchmark_split(store, source, source.split, spec) if source else None

    def score(model: torch.nn.Module) -> dict[str, Any]:
        if source is not None and images is not None:
            recalibrate_on(model, images, source, settings.eval_batch_size)
        return evaluate_model_on(model, val, settings.eval_batch_size).model_dump()

    base, delta = _summed_state(claimed, store)
    results = scan_grid(base, delta, spec, grid, score)
    chosen = best_lambda(results)
    tuning = {
        "metric": TUNING_METRIC,
        "split": "val",
        "benchmark_id": benchmark.id,
        "recalibrated_on": source.benchmark_id if source else None,
        "scores": {str(lam): results[lam][TUNING_METRIC] for lam in grid},
        "lambda": chosen,
    }
    log.info("merge job %s: lambda %.3g chosen from %s", job_id, chosen, tuning["scores"])
    plan = replace(
        claimed,
        params={**claimed.params, "lambda": chosen},
        provenance={**claimed.provenance, "params": {**claimed.params, "lambda": chosen}},
    )
    computed = compute(plan, store, settings)
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id)
        assert job is not None
        job.params = {**job.params, "lambda": chosen, "tuning": tuning}
        outcome = finish(session, plan, computed)
        if outcome.ran and outcome.version_id:
            store_metrics(session, outcome.version_id, benchmark.id, "val", results[chosen])
    return outcome


def _spec_of(plan: MergePlan) -> ModelSpec:
    from medvec.models import read_model_spec

    return read_model_spec(plan.base_path)
