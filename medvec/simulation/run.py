"""In-process simulation of MedVec's merging: N hospitals, G generations, every strategy.

No registry and no worker: the reproduction sweep (``benchmarks/reproduce.py``,
``benchmarks/learning.py`` and ``medvec simulate``) needs hundreds of fine-tunings,
so it runs them in one process with the same core functions the system uses
(``fine_tune``, ``compute_vector``, ``merge_state_dicts``, ``recalibrate_bn``,
``evaluate_model``). One run:

1. take (a seeded subset of) the target's train split and split it across N
   hospitals, IID or Dirichlet(alpha) non-IID over the labels;
2. **local models**: each hospital fine-tunes the base on its own part alone, with
   the budget it spends over all generations (G x the per-generation epochs or
   steps): what a hospital has without MedVec;
3. **generations**: in generation g every hospital fine-tunes the current global
   model (the base, then the version promoted in g - 1) on its part; the data
   vectors are merged with each strategy; every merged model gets its BatchNorm
   statistics recomputed on the validation images (calibration); task arithmetic's
   lambda is chosen on the validation split from ``lambda_multiples / N`` (1/N is
   the plain mean, larger values a server step beyond it); the strategy with the
   best validation accuracy is promoted and starts generation g + 1;
4. **centralized**: one model trained on the union of the parts with the same
   total budget (the pooled-training reference);
5. every model is evaluated on the test split (accuracy, macro AUC, macro F1),
   which is never used to choose anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from medvec.merging.spec import LAMBDA_MULTIPLES, MergeSpec
from medvec.simulation.runner import Runner, State, labels_of, partition_indices, state_of
from medvec.training_config import Recipe

__all__ = [
    "DEFAULT_STRATEGIES",
    "LAMBDA_MULTIPLES",
    "SimulationConfig",
    "SimulationResult",
    "run_simulation",
    "summary_row",
]

DEFAULT_STRATEGIES = ("weighted_mean", "task_arithmetic", "ties", "median")

EventFn = Callable[[str, dict[str, Any]], None]


class SimulationConfig(BaseModel):
    """One point of the sweep: dataset, hospitals, split, generations and training."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "pneumoniamnist"
    hospitals: int = Field(default=5, ge=1)
    partition: str = Field(default="iid", pattern="^(iid|dirichlet)$")
    alpha: float = Field(default=0.5, gt=0)
    max_train: int | None = Field(default=2500, ge=1)
    max_val: int | None = Field(default=500, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    generations: int = Field(default=6, ge=1)
    epochs: int = Field(default=3, ge=1)
    steps: int | None = Field(default=None, ge=1)
    recipe: Recipe = "sgd"
    lr: float | None = Field(default=None, gt=0)  # None: the recipe's (0.05 sgd, 1e-3 adam)
    batch_size: int = Field(default=32, ge=1)
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    lambda_multiples: tuple[float, ...] = LAMBDA_MULTIPLES
    calibrate: bool = True
    centralized: bool = True
    seed: int = 0
    eval_batch_size: int = Field(default=256, ge=1)


@dataclass
class SimulationResult:
    """Long-format rows (one per evaluated model) and the wall time of the run."""

    config: SimulationConfig
    arch: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def merged(self, strategy: str, generation: int | None = None) -> dict[str, Any]:
        """The merged row of ``strategy`` in ``generation`` (default: the last)."""
        wanted = generation or self.config.generations
        return next(
            r
            for r in self.rows
            if r["kind"] == "merged" and r["strategy"] == strategy and r["generation"] == wanted
        )

    def promoted(self, generation: int | None = None) -> dict[str, Any]:
        wanted = generation or self.config.generations
        return next(
            r
            for r in self.rows
            if r["kind"] == "merged" and r["generation"] == wanted and r["promoted"]
        )

    def local_mean(self, metric: str = "accuracy") -> float:
        values = [r[metric] for r in self.rows if r["kind"] == "local"]
        return float(sum(values) / len(values))

    def centralized(self) -> dict[str, Any] | None:
        return next((r for r in self.rows if r["kind"] == "centralized"), None)


@dataclass
class _Candidate:
    """One strategy's merged model of a generation, as chosen on validation."""

    strategy: str
    state: State
    val: dict[str, float]
    val_uncalibrated: float
    lam: float | None = None


def _spec(config: SimulationConfig, strategy: str, **fields: Any) -> MergeSpec:
    return MergeSpec.checked(strategy=strategy, seed=config.seed, **fields)


def _merge(start: State, vectors: list[State], samples: list[float], spec: MergeSpec) -> State:
    from medvec.merging import merge_state_dicts

    weights = [spec.weight(int(n)) for n in samples]
    return merge_state_dicts(
        start,
        vectors,
        strategy=spec.strategy,
        params=spec.params,
        weights=spec.engine_weights(weights),
        seed=spec.seed,
    )


def _candidate(runner: Runner, strategy: str, merged: State, lam: float | None) -> _Candidate:
    """The merged model, BN-recalibrated when the config asks, with its validation scores."""
    plain = runner.evaluate(merged, "val")
    if not runner.config.calibrate:
        return _Candidate(strategy, merged, plain, plain["val_accuracy"], lam)
    state = runner.calibrated(merged)
    return _Candidate(strategy, state, runner.evaluate(state, "val"), plain["val_accuracy"], lam)


def _tuned_task_arithmetic(
    runner: Runner, start: State, vectors: list[State], samples: list[float]
) -> _Candidate:
    """Lambda chosen by the core's tuner among ``multiples / N`` on validation accuracy
    (after recalibration when the config asks; ties: the smaller lambda)."""
    from medvec.merging.tuning import apply_lambda, delta_from_states, scan_lambdas

    grid = tuple(m / len(vectors) for m in runner.config.lambda_multiples)
    spec = _spec(runner.config, "task_arithmetic", lambda_grid=grid)
    delta = delta_from_states(vectors, [spec.weight(int(n)) for n in samples])

    def score(model: torch.nn.Module) -> dict[str, Any]:
        plain = runner.evaluate_model(model, "val")
        if not runner.config.calibrate:
            return plain
        runner.recalibrate(model)
        return {**runner.evaluate_model(model, "val"), "_plain": plain["val_accuracy"]}

    scan = scan_lambdas(runner.model, start.__getitem__, delta, grid, score, metric="val_accuracy")
    apply_lambda(runner.model, start.__getitem__, delta, scan.chosen)
    if runner.config.calibrate:
        runner.recalibrate(runner.model)
    val = dict(scan.best)
    plain_accuracy = float(val.pop("_plain", val["val_accuracy"]))
    return _Candidate("task_arithmetic", state_of(runner.model), val, plain_accuracy, scan.chosen)


def _generation(
    runner: Runner,
    start: State,
    vectors: list[State],
    weights: list[float],
) -> list[_Candidate]:
    candidates = []
    for strategy in runner.config.strategies:
        if _spec(runner.config, strategy).strategy_impl.tunes_lambda:
            candidates.append(_tuned_task_arithmetic(runner, start, vectors, weights))
        else:
            merged = _merge(start, vectors, weights, _spec(runner.config, strategy))
            candidates.append(_candidate(runner, strategy, merged, None))
    return candidates


def run_simulation(
    config: SimulationConfig,
    base: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_event: EventFn | None = None,
) -> SimulationResult:
    """Run one simulation (see the module docstring) from the base model file ``base``."""
    from medvec.merging.similarity import mean_cosine, pairwise_dots_in_memory
    from medvec.training import resolve_device
    from medvec.vectors import compute_vector

    started = time.perf_counter()
    emit = on_event or (lambda name, info: None)
    runner = Runner(config, base, datasets_dir, resolve_device(device))
    result = SimulationResult(config=config, arch=runner.spec.arch)
    common = {"dataset": config.dataset, "arch": runner.spec.arch, "hospitals": config.hospitals}
    parts = [p for p in partition_indices(labels_of(runner.train), config) if p]
    weights = [float(len(p)) for p in parts]
    rounds = config.generations
    for number, part in enumerate(parts):
        emit("local", {"hospital": number, "of": len(parts), "samples": len(part)})
        state = runner.train_on(runner.base_state, part, rounds, config.seed + number)
        row = {"kind": "local", "strategy": "", "hospital": number, "samples": len(part)}
        metrics = {**runner.evaluate(state), **runner.evaluate(state, "val")}
        result.rows.append({**common, **row, **metrics})
    current = runner.base_state
    for generation in range(1, rounds + 1):
        vectors = []
        for number, part in enumerate(parts):
            emit("hospital", {"generation": generation, "hospital": number, "of": len(parts)})
            seed = config.seed + number + 1000 * (generation - 1)
            vectors.append(compute_vector(current, runner.train_on(current, part, 1, seed)))
        emit("merge", {"generation": generation})
        cosine = mean_cosine(pairwise_dots_in_memory(vectors))
        candidates = _generation(runner, current, vectors, weights)
        chosen = max(candidates, key=lambda c: c.val["val_accuracy"])  # first wins ties
        for candidate in candidates:
            row = {
                "kind": "merged",
                "strategy": candidate.strategy,
                "generation": generation,
                "lambda": candidate.lam,
                "samples": sum(weights),
                "promoted": candidate is chosen,
                "cosine": cosine,
                "val_accuracy_uncalibrated": candidate.val_uncalibrated,
            }
            metrics = {**candidate.val, **runner.evaluate(candidate.state)}
            result.rows.append({**common, **row, **metrics})
        current = chosen.state
    if config.centralized:
        emit("centralized", {"samples": int(sum(weights))})
        union = [i for part in parts for i in part]
        state = runner.train_on(runner.base_state, union, rounds, config.seed, scale=len(parts))
        row = {"kind": "centralized", "strategy": "", "samples": len(union)}
        metrics = {**runner.evaluate(state), **runner.evaluate(state, "val")}
        result.rows.append({**common, **row, **metrics})
    result.seconds = time.perf_counter() - started
    return result


def summary_row(result: SimulationResult) -> dict[str, Any]:
    """One wide row per run: mean local, each strategy and the promoted model in the last
    generation, the weighted mean in the first, centralized (test accuracy; ``*_auc``:
    macro AUC)."""
    config = result.config
    row: dict[str, Any] = {
        "dataset": config.dataset,
        "arch": result.arch,
        "hospitals": config.hospitals,
        "partition": config.partition
        + (f"({config.alpha:g})" if config.partition == "dirichlet" else ""),
        "generations": config.generations,
        "local_mean": result.local_mean(),
        "local_auc": result.local_mean("auc"),
        "local_best": max(r["accuracy"] for r in result.rows if r["kind"] == "local"),
    }
    for r in result.rows:
        if r["kind"] == "merged" and r["generation"] == config.generations:
            row[r["strategy"]] = r["accuracy"]
            if r.get("lambda") is not None:
                row["ta_lambda"] = r["lambda"]
    if "weighted_mean" in config.strategies:
        row["wm_gen1"] = result.merged("weighted_mean", 1)["accuracy"]
        row["wm_auc"] = result.merged("weighted_mean")["auc"]
    promoted = result.promoted()
    row["promoted"] = promoted["accuracy"]
    row["promoted_strategy"] = promoted["strategy"]
    row["cosine"] = promoted["cosine"]
    central = result.centralized()
    if central is not None:
        row["centralized"] = central["accuracy"]
        row["central_auc"] = central["auc"]
    row["seconds"] = round(result.seconds, 1)
    return {
        k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()
    }
