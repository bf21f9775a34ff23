"""One simulated hospital: pull the model, fine-tune it, wait out its own slowness, push.

Each hospital has its own token, working folder and pace (``hospital_cli.demo.pace``).
A job takes one of the demo's training slots, pulls the registry's current base (the
production model once a promotion started a generation from it), fine-tunes it with
``hospital_cli.local.train_vector`` (the code behind ``medvec train``), gives the slot
back, waits ``slowdown - 1`` times its training time when the hospital is slow, and
pushes the vector through the resumable upload protocol.

Two schedules drive the jobs: :class:`LockstepRound` runs one hospital's job of a
lockstep generation, :class:`HospitalLoop` runs a hospital's jobs one after the other
until the run's budget is spent, with no wait for anyone. In the loop, a hospital whose
last push was against the base it pulls again (production has not moved) continues
from its own last fine-tuned model: the new vector, still against that base, holds all
its work since, and replaces the previous one in the registry's merges.

With ``score`` set, each local model is also scored on the benchmark's test split — a
number a real hospital could not compute, kept for the demo's table (``--score-locals``).
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
from hospital_cli.demo.pace import Budget, Pace
from hospital_cli.downloads import cached_or_download
from hospital_cli.local import TrainRequest, train_vector
from hospital_cli.uploads import ResumeStore, Uploader
from medvec.training_config import TrainConfig, recipe_config

StatusFn = Callable[[str, str, float | None, float | None], None]
ScoreFn = Callable[[Path], dict[str, float]]
MAX_FAILURES = 3  # a hospital whose jobs fail this many times in a row stops


@dataclass(frozen=True)
class HospitalSpec:
    name: str
    token: str
    data: Path
    samples: int
    workdir: Path


@dataclass
class LocalRound:
    """One job of one hospital: what it trained on, when, and what the registry said."""

    hospital: str
    generation: int  # lockstep: the generation; asynchronous: the pulled base's generation
    samples: int
    epochs: int
    vector_id: str | None
    vector_status: str | None
    started_s: float
    pushed_s: float
    metrics: dict[str, float]
    error: str | None = None
    job: int = 1  # the hospital's job number
    base_id: str | None = None
    trained_s: float = 0.0  # seconds of training in a slot, before a slow hospital's wait
    continued: bool = False  # started from its own last model (production had not moved)


@dataclass(frozen=True)
class Training:
    """Every job's local training settings; ``seed`` is offset per job and hospital."""

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


@dataclass(frozen=True)
class _Last:
    """A hospital's last pushed job: the base it was against and its fine-tuned model."""

    base_id: str
    model: Path


class Hospital:
    """One hospital's jobs against the registry (called from one thread at a time)."""

    def __init__(
        self,
        spec: HospitalSpec,
        server: str,
        pace: Pace,
        training: Training,
        *,
        slots: threading.Semaphore,
        clock: Callable[[], float],
        status: StatusFn,
        score: ScoreFn | None,
        index: int,
    ) -> None:
        self.spec, self.server, self.pace, self.training = spec, server, pace, training
        self.slots, self.clock, self.status, self.score = slots, clock, status, score
        self.index = index
        self.last: _Last | None = None

    def away(self, job: int) -> None:
        """A random pause before a job (hospitals are never in step)."""
        rng = random.Random(f"{self.spec.name}-{job}-{self.training.seed}")
        delay = rng.uniform(0.0, self.training.max_delay)
        self.status(self.spec.name, f"offline for {delay:.0f} s", None, None)
        time.sleep(delay)

    def job(self, number: int, *, base: dict[str, Any] | None, keep_going: bool) -> LocalRound:
        """Job ``number`` against ``base`` (``None``: the current base when a training slot
        is free). ``keep_going``: continue from the last model while the base is the same."""
        started = self.clock()
        try:
            return self._job(number, base, keep_going, started)
        except Exception as exc:  # reported in the table; the other hospitals go on
            self.status(self.spec.name, f"[red]failed: {exc}", None, None)
            return LocalRound(
                self.spec.name, 0 if base is None else int(base.get("generation", 0)) + 1,
                self.spec.samples, self.training.epochs, None, None, started, self.clock(), {},
                error=str(exc), job=number,
            )  # fmt: skip

    def _job(
        self, number: int, base: dict[str, Any] | None, keep_going: bool, started: float
    ) -> LocalRound:
        spec = self.spec
        with RegistryClient(self.server, spec.token) as client:
            with self.slots:
                base = base or client.get_base("current")
                self.status(spec.name, "pulling the base", None, None)
                base_path, _ = cached_or_download(
                    client,
                    f"/bases/{base['id']}/download",
                    spec.workdir / "bases",
                    str(base["sha256"]),
                )
                _keep_only(spec.workdir / "bases", base_path)
                start_from = None
                if keep_going and self.last is not None and self.last.base_id == base["id"]:
                    start_from = self.last.model
                began = time.monotonic()
                model = self._train(number, base, base_path, start_from)
                trained = time.monotonic() - began
            if self.pace.slowdown > 1:
                wait = (self.pace.slowdown - 1) * trained
                self.status(spec.name, f"slow machine: {wait:.0f} s more", None, None)
                time.sleep(wait)
            self.status(spec.name, "pushing", None, None)
            vector_file = spec.workdir / f"vector-{number}.safetensors"
            pushed = Uploader(client, ResumeStore(spec.workdir / "uploads")).push(vector_file)
            vector = pushed.vector
            pushed_at = self.clock()
            self.status(spec.name, f"pushed ({vector.get('status', '?')})", 1, 1)
        if self.last is not None and self.last.model != model:
            self.last.model.unlink(missing_ok=True)
        self.last = _Last(str(base["id"]), model)
        metrics = self.score(model) if self.score is not None else {}
        return LocalRound(
            spec.name, int(base.get("generation", 0)) + 1, spec.samples, self.training.epochs,
            str(vector.get("id")), str(vector.get("status")), started, pushed_at, metrics,
            job=number, base_id=str(base["id"]), trained_s=round(trained, 2),
            continued=start_from is not None,
        )  # fmt: skip

    def _train(
        self, number: int, base: dict[str, Any], base_path: Path, start_from: Path | None
    ) -> Path:
        spec, training = self.spec, self.training
        model = spec.workdir / f"model-{number}.safetensors"
        request = TrainRequest(
            base=base_path,
            base_record=base,
            data=spec.data,
            out=spec.workdir / f"vector-{number}.safetensors",
            hospital=spec.name,
            recipe=demo_recipe(
                epochs=training.epochs,
                lr=training.lr,
                batch_size=training.batch_size,
                seed=training.seed + 1000 * number + self.index,
            ),
            val_fraction=0.0,
            device=training.device,
            save_model=model,
            continue_from=start_from,
            extra={"demo_job": str(number)},
        )

        def on_step(step: Any = None, total: int | None = None, **stats: Any) -> None:
            loss = stats.get("loss")
            text = f"training (loss {loss:.3f})" if isinstance(loss, float) else "training"
            self.status(spec.name, text, step, total)

        self.status(spec.name, "continuing its own model" if start_from else "training", 0, None)
        train_vector(request, on_step=on_step)
        return model


def _keep_only(folder: Path, keep: Path) -> None:
    """Remove the bases a hospital pulled before ``keep`` (one model's size each)."""
    for old in folder.glob("*.safetensors"):
        if old != keep:
            old.unlink(missing_ok=True)


class LockstepRound(threading.Thread):
    """One hospital's job of one lockstep generation; the result lands in ``self.result``."""

    def __init__(self, hospital: Hospital, generation: int, base: dict[str, Any]) -> None:
        super().__init__(name=f"hospital-{hospital.spec.name}", daemon=True)
        self.hospital, self.generation, self.base = hospital, generation, base
        self.result: LocalRound | None = None

    def run(self) -> None:
        self.hospital.away(self.generation)
        result = self.hospital.job(self.generation, base=self.base, keep_going=False)
        result.generation = self.generation
        self.result = result


class HospitalLoop(threading.Thread):
    """A hospital's jobs one after the other while the budget lasts; each pulls what
    production is when it starts and pushes against it, never waiting for the others."""

    def __init__(self, hospital: Hospital, budget: Budget) -> None:
        super().__init__(name=f"hospital-{hospital.spec.name}", daemon=True)
        self.hospital, self.budget = hospital, budget
        self.results: list[LocalRound] = []
        self.waiting = hospital.pace.joins_at > 0  # a late joiner, not started yet

    def run(self) -> None:
        hospital = self.hospital
        name = hospital.spec.name
        if self.waiting:
            share = f"{hospital.pace.joins_at:.0%}"
            hospital.status(name, f"joins once {share} of the budget is trained", None, None)
            joined = self.budget.wait_for_share(hospital.pace.joins_at)
            self.waiting = False
            if not joined:
                return
        number = failures = 0
        while failures < MAX_FAILURES:
            number += 1
            hospital.away(number)
            if not self.budget.claim(hospital.spec.samples * hospital.training.epochs):
                break
            result = hospital.job(number, base=None, keep_going=True)
            self.results.append(result)
            if result.vector_id is None:
                failures += 1
            else:
                failures = 0
                self.budget.arrived(result.samples * result.epochs)
        hospital.status(name, f"done: {len(self.results)} jobs", 1, 1)
