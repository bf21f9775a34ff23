"""In-process simulation of MedVec's merging: N hospitals, one base, every strategy.

No registry and no worker: the reproduction sweep (``benchmarks/reproduce.py`` and
``medvec simulate``) needs hundreds of fine-tunings, so it runs them in one process
with the same core functions the system uses (``fine_tune``, ``compute_vector``,
``merge_state_dicts``, ``evaluate_model``). One run:

1. take (a seeded subset of) the target's train split and split it across N
   hospitals, IID or Dirichlet(alpha) non-IID over the labels;
2. fine-tune the base on each hospital's part; its data vector is fine-tuned - base;
3. merge the N vectors with each strategy; task arithmetic's lambda is chosen on
   the validation split from a grid of multiples of 1/N (1/N is the plain mean);
4. train one model on the union of the parts (centralized, the upper reference);
5. evaluate every local model, every merged model and the centralized model on
   the test split: accuracy, macro AUC, macro F1.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from medvec.models import load_model_file

__all__ = [
    "DEFAULT_STRATEGIES",
    "SimulationConfig",
    "SimulationResult",
    "run_simulation",
    "summary_row",
]

DEFAULT_STRATEGIES = ("weighted_mean", "task_arithmetic", "ties", "median")
LAMBDA_MULTIPLES = (0.5, 1.0, 1.5, 2.0)

EventFn = Callable[[str, dict[str, Any]], None]


class SimulationConfig(BaseModel):
    """One point of the sweep: dataset, hospitals, split and training settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "pneumoniamnist"
    hospitals: int = Field(default=5, ge=1)
    partition: str = Field(default="iid", pattern="^(iid|dirichlet)$")
    alpha: float = Field(default=0.5, gt=0)
    max_train: int | None = Field(default=1500, ge=1)
    max_val: int | None = Field(default=500, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=32, ge=1)
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    lambda_multiples: tuple[float, ...] = LAMBDA_MULTIPLES
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

    def merged(self, strategy: str) -> dict[str, Any]:
        return next(r for r in self.rows if r["kind"] == "merged" and r["strategy"] == strategy)

    def local_mean(self, metric: str = "accuracy") -> float:
        values = [r[metric] for r in self.rows if r["kind"] == "local"]
        return float(sum(values) / len(values))


def _metric_row(metrics: Any) -> dict[str, float]:
    data = metrics.model_dump() if hasattr(metrics, "model_dump") else dict(metrics)
    return {
        "accuracy": float(data["accuracy"]),
        "auc": float(data.get("auc_macro") or float("nan")),
        "f1": float(data.get("f1_macro") or float("nan")),
    }


def _capped(dataset: Any, cap: int | None, seed: int) -> Any:
    from torch.utils.data import Subset

    if cap is None or cap >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:cap].tolist())


def _labels_of(dataset: Any) -> Any:
    """Flat label array of a dataset or of a Subset of one."""
    import numpy as np

    if hasattr(dataset, "indices"):
        return np.asarray(_labels_of(dataset.dataset))[np.asarray(dataset.indices)]
    return np.asarray(dataset.labels).reshape(len(dataset), -1)[:, 0]


def partition_indices(labels: Any, config: SimulationConfig) -> list[list[int]]:
    """Hospital parts of ``labels``' positions; every hospital gets at least one sample."""
    from medvec.data import split_dirichlet, split_iid

    if config.partition == "iid":
        parts = split_iid(labels, config.hospitals, config.seed)
    else:
        parts = split_dirichlet(labels, config.hospitals, config.alpha, config.seed)
    return [list(map(int, part)) for part in parts]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


def _all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


class _Runner:
    """Holds the base, the data splits and the device for one simulation run."""

    def __init__(
        self, config: SimulationConfig, base: Path, datasets_dir: Path | None, device: Any
    ) -> None:
        from medvec.data import load_medmnist, resolve_datasets_dir
        from medvec.data.download import ensure_medmnist

        self.config = config
        self.device = device
        self.model, self.spec = load_model_file(base, device="cpu")
        self.base_state = _state(self.model)
        folder = resolve_datasets_dir(datasets_dir)
        ensure_medmnist(config.dataset, folder)
        channels, size = self.spec.in_channels, self.spec.image_size

        def split(name: str, cap: int | None, seed: int) -> Any:
            data = load_medmnist(
                config.dataset, name, folder, in_channels=channels, image_size=size
            )
            return _capped(data, cap, seed)

        self.train = split("train", config.max_train, config.seed)
        self.val = split("val", config.max_val, config.seed + 1)
        self.test = split("test", config.max_test, config.seed + 2)

    def fresh_model(self, state: dict[str, torch.Tensor] | None = None) -> torch.nn.Module:
        self.model.load_state_dict(state or self.base_state)
        return self.model

    def train_on(self, indices: Sequence[int], epochs: int, seed: int) -> dict[str, torch.Tensor]:
        from torch.utils.data import Subset

        from medvec.training import TrainConfig, fine_tune

        model = self.fresh_model()
        train_config = TrainConfig(
            epochs=epochs, lr=self.config.lr, batch_size=self.config.batch_size, seed=seed
        )
        fine_tune(model, Subset(self.train, list(indices)), train_config, device=self.device)
        return _state(model)

    def evaluate(self, state: dict[str, torch.Tensor], split: str = "test") -> dict[str, float]:
        from medvec.evaluation import evaluate_model

        dataset = self.test if split == "test" else self.val
        model = self.fresh_model(state)
        metrics = evaluate_model(
            model, dataset, device=self.device, batch_size=self.config.eval_batch_size
        )
        return _metric_row(metrics)


def _merge(
    runner: _Runner,
    vectors: list[dict[str, torch.Tensor]],
    weights: list[float],
    strategy: str,
    params: dict[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    from medvec.merging import merge_state_dicts

    return merge_state_dicts(
        runner.base_state,
        vectors,
        strategy=strategy,
        params=params,
        seed=runner.config.seed,
        num_samples=[int(w) for w in weights] if strategy == "weighted_mean" else None,
    )


def tune_task_arithmetic(
    runner: _Runner, vectors: list[dict[str, torch.Tensor]]
) -> tuple[float, dict[str, torch.Tensor]]:
    """Lambda with the best validation accuracy among ``multiples / N``, and its model."""
    best: tuple[float, float, dict[str, torch.Tensor]] | None = None
    for multiple in runner.config.lambda_multiples:
        lam = multiple / len(vectors)
        state = _merge(runner, vectors, [], "task_arithmetic", {"lambda": lam})
        if not _all_finite(state):
            continue
        accuracy = runner.evaluate(state, "val")["accuracy"]
        if best is None or accuracy > best[0]:
            best = (accuracy, lam, state)
    if best is None:
        raise ValueError("every lambda of the grid gave non-finite weights")
    return best[1], best[2]


def run_simulation(
    config: SimulationConfig,
    base: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_event: EventFn | None = None,
) -> SimulationResult:
    """Run one simulation (see the module docstring) from the base model file ``base``."""
    from medvec.training import resolve_device
    from medvec.vectors import compute_vector

    started = time.perf_counter()
    emit = on_event or (lambda name, info: None)
    runner = _Runner(config, base, datasets_dir, resolve_device(device))
    result = SimulationResult(config=config, arch=runner.spec.arch)
    common = {"dataset": config.dataset, "arch": runner.spec.arch, "hospitals": config.hospitals}
    parts = [p for p in partition_indices(_labels_of(runner.train), config) if p]
    vectors: list[dict[str, torch.Tensor]] = []
    for number, part in enumerate(parts):
        emit("local", {"hospital": number, "of": len(parts), "samples": len(part)})
        state = runner.train_on(part, config.epochs, config.seed + number)
        vectors.append(compute_vector(runner.base_state, state))
        row = {"kind": "local", "strategy": "", "hospital": number, "samples": len(part)}
        result.rows.append({**common, **row, **runner.evaluate(state)})
    weights = [float(len(p)) for p in parts]
    for strategy in config.strategies:
        emit("merge", {"strategy": strategy})
        lam: float | None = None
        if strategy == "task_arithmetic":
            lam, state = tune_task_arithmetic(runner, vectors)
        else:
            state = _merge(runner, vectors, weights, strategy)
        row = {"kind": "merged", "strategy": strategy, "lambda": lam, "samples": sum(weights)}
        result.rows.append({**common, **row, **runner.evaluate(state)})
    if config.centralized:
        emit("centralized", {"samples": int(sum(weights))})
        union = [i for part in parts for i in part]
        state = runner.train_on(union, config.epochs, config.seed)
        row = {"kind": "centralized", "strategy": "", "samples": len(union)}
        result.rows.append({**common, **row, **runner.evaluate(state)})
    result.seconds = time.perf_counter() - started
    return result


def summary_row(result: SimulationResult) -> dict[str, Any]:
    """One wide row per run: mean local, each merged strategy, centralized (accuracy)."""
    row: dict[str, Any] = {
        "dataset": result.config.dataset,
        "arch": result.arch,
        "hospitals": result.config.hospitals,
        "partition": result.config.partition
        + (f"({result.config.alpha:g})" if result.config.partition == "dirichlet" else ""),
        "local_mean": result.local_mean(),
    }
    for r in result.rows:
        if r["kind"] == "merged":
            row[r["strategy"]] = r["accuracy"]
            if r.get("lambda") is not None:
                row["ta_lambda"] = r["lambda"]
        elif r["kind"] == "centralized":
            row["centralized"] = r["accuracy"]
    row["seconds"] = round(result.seconds, 1)
    return {
        k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in row.items()
    }
