"""The demo's settings, its records (local rounds, merged versions) and the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hospital_cli.demo.hospital import LocalRound

STRATEGIES = ("weighted_mean", "task_arithmetic", "ties", "median")
"""The strategies the demo can show; by default the admin runs the first two (linear
merges, cheapest to evaluate on a CPU)."""


@dataclass(frozen=True)
class DemoSettings:
    output: Path
    dataset: str = "bloodmnist"
    hospitals: int = 10
    generations: int = 3
    alpha: float | None = 1.0
    arch: str = "resnet10"
    max_train: int | None = 12000
    max_val: int | None = 500
    max_test: int | None = None
    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 32
    max_delay: float = 6.0
    concurrency: int = 2
    score_locals: bool = False  # score each generation's local fine-tunes on test too
    strategies: tuple[str, ...] = STRATEGIES[:2]
    pretrain_samples: int | None = None
    pretrain_steps: int = 500
    stem: str = "imagenet"
    checkpoint: Path | None = None
    seed: int = 0
    datasets_dir: Path | None = None
    device: str | None = None
    lockstep: bool = False  # generations with a barrier instead of the asynchronous loop
    straggler_slowdown: float = 10.0  # one hospital this many times slower (1: none)
    late_join: float = 1 / 3  # one hospital joins once this share is trained (0: none)
    auto_merge_k: int | None = None  # None: the schedule's own (auto_merge_k())
    references: bool = True  # train the hospitals alone and the centralized model

    def auto_merge_k_value(self) -> int:
        """K of the registry's auto-merge policy: lockstep makes one interim version per
        generation from just over half the hospitals' vectors; the asynchronous schedule
        merges every third of them (K = 3 for 10 hospitals, as measured on the virtual
        clock in docs/merging.md)."""
        if self.auto_merge_k is not None:
            return self.auto_merge_k
        if self.lockstep:
            return max(2, self.hospitals // 2 + 1)
        return max(2, self.hospitals // 3)


@dataclass
class MergedVersion:
    generation: int
    version_id: str
    strategy: str
    trigger: str
    params: dict[str, Any]
    vectors: int
    metrics: dict[str, float]  # test: what is reported
    val_metrics: dict[str, float] = field(default_factory=dict)  # val: what promotion uses
    status: str = "candidate"
    inputs: list[str] = field(default_factory=list)  # the merged vectors' ids
    created_s: float | None = None  # seconds after the hospitals started


@dataclass
class DemoReport:
    settings: DemoSettings
    base: dict[str, Any] = field(default_factory=dict)
    locals: list[LocalRound] = field(default_factory=list)
    versions: list[MergedVersion] = field(default_factory=list)
    alone: dict[str, dict[str, float]] = field(default_factory=dict)  # hospital -> test
    centralized: dict[str, float] = field(default_factory=dict)
    promoted: list[str] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    schedule_s: float = 0.0  # from the hospitals' start to the last promoted model
    budget_images: int = 0  # images the schedule may train (the lockstep schedule's work)
    images_trained: int = 0
    paces: dict[str, dict[str, Any]] = field(default_factory=dict)  # hospital -> its pace
    registry: dict[str, str] = field(default_factory=dict)  # the registry's policy settings
    production: list[dict[str, Any]] = field(default_factory=list)  # promotions, in order


class Ui:
    """What the orchestration reports while it runs (a rich progress display in the CLI);
    this one reports nothing."""

    def phase(self, text: str) -> None:
        return None

    def hospital(
        self, name: str, text: str, done: float | None = None, total: float | None = None
    ) -> None:
        return None


def pick_metrics(evaluations: list[dict[str, Any]], split: str = "test") -> dict[str, float]:
    """Accuracy, AUC and F1 of the first finished evaluation on ``split``."""
    for evaluation in evaluations:
        metrics = evaluation.get("metrics") or {}
        if evaluation.get("split", split) == split and "accuracy" in metrics:
            return {
                "accuracy": float(metrics["accuracy"]),
                "auc": float(metrics.get("auc_macro") or "nan"),
                "f1": float(metrics.get("f1_macro") or "nan"),
            }
    return {}
