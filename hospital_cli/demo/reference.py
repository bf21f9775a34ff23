"""What the demo measures beside the registry, on the test split: each hospital's model
trained alone (what it has without MedVec) and the centralized model trained on the
union of all hospitals' images (pooled training), both with the generations' budget."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from hospital_cli.demo.data import DemoData
from hospital_cli.demo.hospital import demo_recipe
from hospital_cli.demo.state import DemoSettings, Ui

T = TypeVar("T")


class Scorer:
    """Scores model files on the benchmark's test split (loaded once, shared by threads)."""

    def __init__(self, benchmark: Path, device: str | None) -> None:
        self.benchmark, self.device = benchmark, device
        self._test_set: Any = None
        self._lock = threading.Lock()

    def __call__(self, model_file: Path) -> dict[str, float]:
        from medvec.data import load_npz
        from medvec.evaluation import evaluate_model
        from medvec.models import load_model_file
        from medvec.training import resolve_device

        model, spec = load_model_file(model_file)
        with self._lock:
            if self._test_set is None:
                self._test_set = load_npz(self.benchmark, "test", in_channels=spec.in_channels)
        metrics = evaluate_model(
            model, self._test_set, device=resolve_device(self.device), batch_size=256
        )
        data = metrics.model_dump()
        return {
            "accuracy": float(data["accuracy"]),
            "auc": float(data.get("auc_macro") or "nan"),
            "f1": float(data.get("f1_macro") or "nan"),
        }


def _union(shards: list[Path]) -> tuple[Any, Any]:
    import numpy as np

    images, labels = [], []
    for shard in shards:
        with np.load(shard) as archive:
            images.append(archive["train_images"])
            labels.append(archive["train_labels"])
    return np.concatenate(images), np.concatenate(labels)


def _train_from_base(
    settings: DemoSettings, shards: list[Path], base_file: Path, out: Path, ui_step: Any
) -> Path:
    """Fine-tune the base on ``shards`` for every generation's epochs at once."""
    from medvec.data import ImageArrayDataset
    from medvec.models import load_model_file, save_model_file
    from medvec.training import fine_tune, resolve_device

    images, labels = _union(shards)
    model, spec = load_model_file(base_file)
    dataset = ImageArrayDataset(images, labels, spec.in_channels, spec.image_size)
    config = demo_recipe(
        epochs=settings.epochs * settings.generations,
        lr=settings.lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )
    fine_tune(model, dataset, config, device=resolve_device(settings.device), on_step=ui_step)
    save_model_file(out, model.to("cpu"), spec, provenance={"name": out.stem})
    return out


def train_alone(
    settings: DemoSettings, data: DemoData, base_file: Path, score: Scorer, ui: Ui
) -> dict[str, dict[str, float]]:
    """Every hospital alone, for all generations' epochs: test metrics by hospital name.

    A hospital alone is what it would have without MedVec: the base fine-tuned on its
    own images only, with as many epochs as it spends over all generations.
    """
    folder = settings.output / "references"
    folder.mkdir(parents=True, exist_ok=True)
    alone: dict[str, dict[str, float]] = {}
    for number, shard in enumerate(data.shards):
        name = f"hospital-{number + 1:02d}"

        def step(step: Any = None, total: int | None = None, _n: str = name, **_: Any) -> None:
            ui.hospital("alone", f"{_n} on its own images", step, total)

        model = _train_from_base(settings, [shard], base_file, folder / f"{name}.safetensors", step)
        alone[name] = score(model)
    ui.hospital("alone", "done", 1, 1)
    return alone


def train_centralized(
    settings: DemoSettings, data: DemoData, base_file: Path, score: Scorer, ui: Ui
) -> dict[str, float]:
    """One model on the union of all hospitals' images, for all generations' epochs."""

    def step(step: Any = None, total: int | None = None, **_: Any) -> None:
        ui.hospital("centralized", "training on the union", step, total)

    out = settings.output / "references" / "centralized.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    model = _train_from_base(settings, data.shards, base_file, out, step)
    ui.hospital("centralized", "done", 1, 1)
    return score(model)


class Background(threading.Thread, Generic[T]):
    """Runs one function beside the generations (a reference model)."""

    def __init__(self, name: str, work: Callable[[], T]) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.value: T | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.work()
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc

    def result(self) -> T:
        self.join()
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value
