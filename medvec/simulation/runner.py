"""What every in-process simulation holds: the base, the data splits, the device, and the
core calls on them (fine-tuning, BatchNorm recalibration, evaluation).

The generational simulation (:mod:`medvec.simulation.run`), the merge diagnosis and the
asynchronous simulation (:mod:`medvec.simulation.asynchronous`) share it, so they train
and score alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from medvec.models import load_model_file
from medvec.training_config import recipe_config

if TYPE_CHECKING:
    from medvec.metrics import Metrics
    from medvec.simulation.run import SimulationConfig

__all__ = ["Runner", "State", "labels_of", "metric_row", "partition_indices", "state_of"]

State = dict[str, torch.Tensor]


def metric_row(metrics: Any, prefix: str = "") -> dict[str, float]:
    data = metrics.model_dump() if hasattr(metrics, "model_dump") else dict(metrics)
    auc, f1 = data.get("auc_macro"), data.get("f1_macro")
    return {
        f"{prefix}accuracy": float(data["accuracy"]),
        f"{prefix}auc": float("nan") if auc is None else float(auc),
        f"{prefix}f1": float("nan") if f1 is None else float(f1),
    }


def capped(dataset: Any, cap: int | None, seed: int) -> Any:
    from torch.utils.data import Subset

    if cap is None or cap >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[:cap].tolist())


def labels_of(dataset: Any) -> Any:
    """Flat label array of a dataset or of a Subset of one."""
    import numpy as np

    if hasattr(dataset, "indices"):
        return np.asarray(labels_of(dataset.dataset))[np.asarray(dataset.indices)]
    return np.asarray(dataset.labels).reshape(len(dataset), -1)[:, 0]


def partition_indices(labels: Any, config: SimulationConfig) -> list[list[int]]:
    """Hospital parts of ``labels``' positions; every hospital gets at least one sample."""
    from medvec.data import split_dirichlet, split_iid

    if config.partition == "iid":
        parts = split_iid(labels, config.hospitals, config.seed)
    else:
        parts = split_dirichlet(labels, config.hospitals, config.alpha, config.seed)
    return [list(map(int, part)) for part in parts]


def state_of(model: torch.nn.Module) -> State:
    return {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}


class Runner:
    """Holds the base, the data splits and the device for one simulation run."""

    def __init__(
        self, config: SimulationConfig, base: Path, datasets_dir: Path | None, device: Any
    ) -> None:
        from medvec.data import load_medmnist, resolve_datasets_dir
        from medvec.data.download import ensure_medmnist

        self.config = config
        self.device = device
        self.model, self.spec = load_model_file(base, device="cpu")
        self.base_state = state_of(self.model)
        folder = resolve_datasets_dir(datasets_dir)
        ensure_medmnist(config.dataset, folder)
        channels, size = self.spec.in_channels, self.spec.image_size

        def split(name: str, cap: int | None, seed: int) -> Any:
            data = load_medmnist(
                config.dataset, name, folder, in_channels=channels, image_size=size
            )
            return capped(data, cap, seed)

        self.train = split("train", config.max_train, config.seed)
        self.val = split("val", config.max_val, config.seed + 1)
        self.test = split("test", config.max_test, config.seed + 2)

    def load(self, state: State) -> torch.nn.Module:
        self.model.load_state_dict(state)
        return self.model

    def train_on(
        self, start: State, indices: Sequence[int], rounds: int, seed: int, scale: int = 1
    ) -> State:
        """Fine-tune ``start`` on ``indices`` for ``rounds`` generations' worth of work.

        ``scale`` multiplies a step budget (the centralized model takes as many steps
        as all hospitals together).
        """
        from torch.utils.data import Subset

        from medvec.training import fine_tune

        config = self.config
        train_config = recipe_config(
            config.recipe,
            epochs=config.epochs * rounds,
            steps=None if config.steps is None else config.steps * rounds * scale,
            **({} if config.lr is None else {"lr": config.lr}),
            batch_size=config.batch_size,
            seed=seed,
        )
        model = self.load(start)
        fine_tune(model, Subset(self.train, list(indices)), train_config, device=self.device)
        return state_of(model)

    def calibrated(self, state: State) -> State:
        self.recalibrate(self.load(state))
        return state_of(self.model)

    def recalibrate(self, model: torch.nn.Module) -> None:
        """Recompute ``model``'s BatchNorm statistics on the validation images, in place."""
        from medvec.calibration import recalibrate_bn

        recalibrate_bn(model, self.val, device=self.device, batch_size=self.config.eval_batch_size)

    def evaluate(self, state: State, split: str = "test") -> dict[str, float]:
        return self.evaluate_model(self.load(state), split)

    def evaluate_model(self, model: torch.nn.Module, split: str = "test") -> dict[str, float]:
        return metric_row(self.metrics(model, split), "" if split == "test" else "val_")

    def metrics(self, model: torch.nn.Module, split: str = "test") -> Metrics:
        """The full metric set of ``model`` on ``split`` (``test`` or ``val``): what the
        registry stores per evaluation and its promotion gate compares."""
        from medvec.evaluation import evaluate_model

        dataset = self.test if split == "test" else self.val
        return evaluate_model(
            model, dataset, device=self.device, batch_size=self.config.eval_batch_size
        )
