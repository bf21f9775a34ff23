"""One simulated hospital: wait its own time, pull the base, fine-tune, push its vector.

Each hospital is a thread with its own token, its own working folder and its own
random start delay, so vectors reach the registry one by one in no fixed order, as
they would from real hospitals. With ``score`` set, the local model is also scored on
the benchmark's test split — a number a real hospital could not compute, kept for the
demo's table (``--score-locals``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hospital_cli.client import RegistryClient
from hospital_cli.downloads import cached_or_download
from hospital_cli.local import TrainRequest, train_vector
from hospital_cli.uploads import ResumeStore, Uploader
from medvec.training_config import TrainConfig, recipe_config

StatusFn = Callable[[str, str, float | None, float | None], None]
ScoreFn = Callable[[Path], dict[str, float]]


@dataclass(frozen=True)
class HospitalSpec:
    name: str
    token: str
    data: Path
    samples: int
    workdir: Path


@dataclass
class LocalRound:
    hospital: str
    generation: int
    samples: int
    epochs: int
    vector_id: str | None
    vector_status: str | None
    started_s: float
    pushed_s: float
    metrics: dict[str, float]
    error: str | None = None


@dataclass(frozen=True)
class RoundPlan:
    generation: int
    base: dict[str, Any]
    epochs: int
    lr: float
    batch_size: int
    seed: int
    max_delay: float
    device: str | None


def demo_recipe(**settings: Any) -> TrainConfig:
    """The demo's training recipe: the ``adam`` recipe (Adam at a constant rate, no
    weight decay, no augmentation) with ``settings`` (epochs, lr, batch size, seed).

    Measured on BloodMNIST with label-skewed hospitals (docs/results.md, "Non-IID: the
    local recipe"): TrainConfig's SGD default gives the better pooled model but merges
    13 points below it, Adam's merges stay within 5.
    """
    return recipe_config("adam", **settings)


class HospitalRun(threading.Thread):
    """Runs one generation's round for one hospital; the result lands in ``self.result``."""

    def __init__(
        self,
        spec: HospitalSpec,
        server: str,
        plan: RoundPlan,
        *,
        slots: threading.Semaphore,
        clock: Callable[[], float],
        status: StatusFn,
        score: ScoreFn | None,
    ) -> None:
        super().__init__(name=f"hospital-{spec.name}", daemon=True)
        self.spec, self.server, self.plan = spec, server, plan
        self.slots, self.clock, self.status, self.score = slots, clock, status, score
        self.result: LocalRound | None = None

    def run(self) -> None:
        started = self.clock()
        try:
            self.result = self._round(started)
        except Exception as exc:  # reported in the table; the other hospitals go on
            self.status(self.spec.name, f"[red]failed: {exc}", None, None)
            self.result = LocalRound(
                self.spec.name, self.plan.generation, self.spec.samples, self.plan.epochs,
                None, None, started, self.clock(), {}, error=str(exc),
            )  # fmt: skip

    def _round(self, started: float) -> LocalRound:
        plan, spec = self.plan, self.spec
        rng = random.Random(f"{spec.name}-{plan.generation}-{plan.seed}")
        delay = rng.uniform(0.0, plan.max_delay)
        self.status(spec.name, f"offline for {delay:.0f} s", None, None)
        time.sleep(delay)
        with RegistryClient(self.server, spec.token) as client:
            self.status(spec.name, "pulling the base", None, None)
            base_path, _ = cached_or_download(
                client,
                f"/bases/{plan.base['id']}/download",
                spec.workdir / "bases",
                str(plan.base["sha256"]),
            )
            with self.slots:
                outcome = self._train(base_path)
            model = spec.workdir / f"model-g{plan.generation}.safetensors"
            self.status(spec.name, "pushing", None, None)
            pushed = Uploader(client, ResumeStore(spec.workdir / "uploads")).push(outcome.vector)
            vector = pushed.vector
            pushed_at = self.clock()
            self.status(spec.name, f"pushed ({vector.get('status', '?')})", 1, 1)
        metrics = self.score(model) if self.score is not None else {}
        return LocalRound(
            spec.name, plan.generation, spec.samples, plan.epochs,
            str(vector.get("id")), str(vector.get("status")), started, pushed_at, metrics,
        )  # fmt: skip

    def _train(self, base_path: Path) -> Any:
        plan, spec = self.plan, self.spec
        request = TrainRequest(
            base=base_path,
            base_record=plan.base,
            data=spec.data,
            out=spec.workdir / f"vector-g{plan.generation}.safetensors",
            hospital=spec.name,
            recipe=demo_recipe(
                epochs=plan.epochs, lr=plan.lr, batch_size=plan.batch_size, seed=plan.seed
            ),
            val_fraction=0.0,
            device=plan.device,
            save_model=spec.workdir / f"model-g{plan.generation}.safetensors",
            extra={"demo_generation": str(plan.generation)},
        )

        def on_step(step: Any = None, total: int | None = None, **stats: Any) -> None:
            loss = stats.get("loss")
            text = f"training (loss {loss:.3f})" if isinstance(loss, float) else "training"
            self.status(spec.name, text, step, total)

        self.status(spec.name, "training", 0, None)
        return train_vector(request, on_step=on_step)
