"""What the demo measures beside the registry: local models on the test split, and the
centralized model trained on the union of all hospitals' images (the reference)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hospital_cli.demo.data import DemoData
from hospital_cli.demo.hospital import demo_recipe
from hospital_cli.demo.state import DemoSettings, Ui


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


def train_centralized(
    settings: DemoSettings, data: DemoData, base_file: Path, score: Scorer, ui: Ui
) -> dict[str, float]:
    """One model trained on the union of all hospitals' data, for the same epochs."""
    import numpy as np

    from medvec.data import ImageArrayDataset
    from medvec.models import load_model_file, save_model_file
    from medvec.training import fine_tune, resolve_device

    images, labels = [], []
    for shard in data.shards:
        with np.load(shard) as archive:
            images.append(archive["train_images"])
            labels.append(archive["train_labels"])
    model, spec = load_model_file(base_file)
    union = ImageArrayDataset(
        np.concatenate(images), np.concatenate(labels), spec.in_channels, spec.image_size
    )
    config = demo_recipe(
        epochs=settings.epochs * settings.generations,
        lr=settings.lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
    )

    def on_step(step: Any = None, total: int | None = None, **_: Any) -> None:
        ui.hospital("centralized", "training on the union", step, total)

    fine_tune(model, union, config, device=resolve_device(settings.device), on_step=on_step)
    out = settings.output / "centralized.safetensors"
    save_model_file(out, model.to("cpu"), spec, provenance={"name": "centralized"})
    ui.hospital("centralized", "done", 1, 1)
    return score(out)


class Background(threading.Thread):
    """Runs one function beside the generations (the centralized reference model)."""

    def __init__(self, work: Callable[[], dict[str, float]]) -> None:
        super().__init__(name="centralized", daemon=True)
        self.work = work
        self.value: dict[str, float] = {}
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self.work()
        except BaseException as exc:  # handed to the caller by result()
            self.error = exc

    def result(self) -> dict[str, float]:
        self.join()
        if self.error is not None:
            raise self.error
        return self.value
