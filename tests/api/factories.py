"""Real files for the registry tests: a ResNet-18 base, a data vector fine-tuned on real
PneumoniaMNIST images, hand-broken variants of it, and a small benchmark ``.npz``."""

from __future__ import annotations

import json
import secrets
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medvec.hashing import sha256_file
from medvec.metrics import compute_metrics
from medvec.models import ModelSpec, get_model, load_model_file, save_model_file
from medvec.secure import write_shares
from medvec.vectors import VectorMetadata, compute_vector, save_vector

SPEC = ModelSpec(arch="resnet18", num_classes=2, in_channels=3, image_size=28)


def _images(datasets_dir: Path, split: str, count: int) -> tuple[Tensor, Tensor]:
    with np.load(datasets_dir / "pneumoniamnist.npz") as data:
        images = data[f"{split}_images"][:count]
        labels = data[f"{split}_labels"][:count].reshape(-1)
    x = torch.from_numpy(images).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1)
    return x, torch.from_numpy(labels.astype(np.int64))


def fine_tune(model: torch.nn.Module, x: Tensor, y: Tensor, *, steps: int, lr: float) -> None:
    optimiser = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()


@dataclass
class ModelKit:
    """A registered-to-be base file and what is needed to write vectors against it."""

    folder: Path
    base_path: Path
    base_sha256: str
    tuned_path: Path
    tensors: dict[str, Tensor]
    counter: list[int] = field(default_factory=lambda: [0])
    written: list[Path] = field(default_factory=list)

    def _next(self, stem: str) -> Path:
        self.counter[0] += 1
        path = self.folder / f"{stem}-{self.counter[0]}.safetensors"
        self.written.append(path)
        return path

    @contextmanager
    def files_of_one_test(self) -> Iterator[None]:
        """Remove the files written inside the block; those written before (by fixtures
        of a wider scope) stay."""
        start = len(self.written)
        try:
            yield
        finally:
            for path in self.written[start:]:
                path.unlink(missing_ok=True)
            del self.written[start:]

    def metadata(self, hospital: str, **overrides: Any) -> VectorMetadata:
        fields: dict[str, Any] = {
            "base_id": self.base_sha256,
            "base_sha256": self.base_sha256,
            "hospital": hospital,
            "num_samples": 64,
            "label_histogram": {"0": 32, "1": 32},
            "training": {"steps": 2, "lr": 0.05},
            "privacy": {},
            "spec": SPEC,
        }
        return VectorMetadata(**{**fields, **overrides})

    def shares(self, hospital: str, weight: int = 64, **metadata: Any) -> tuple[Path, Path]:
        """Share A (for the registry) and share B (for the share holder) of the kit's
        vector pre-scaled by its public ``weight`` (its sample count), split for
        ``hospital`` under a fresh pair id, as `medvec push --secure` does."""
        return write_shares(
            self.tensors,
            self.metadata(hospital, num_samples=weight, **metadata),
            self._next("share-a"),
            self._next("share-b"),
            pair_id=secrets.token_hex(16),
            weight=weight,
        )

    def vector(
        self,
        hospital: str,
        *,
        tensors: dict[str, Tensor] | None = None,
        scale: float = 1.0,
        **metadata: Any,
    ) -> Path:
        """Write a vector file; ``scale`` != 1 gives different bytes of the same vector."""
        chosen = tensors if tensors is not None else self.tensors
        if scale != 1.0:
            chosen = {k: v * scale for k, v in chosen.items()}
        return save_vector(self._next("vector"), chosen, self.metadata(hospital, **metadata))

    def raw(self, data: bytes, stem: str = "raw") -> Path:
        path = self._next(stem)
        path.write_bytes(data)
        return path


def make_model_kit(folder: Path, datasets_dir: Path) -> ModelKit:
    """The base (seeded ResNet-18) and a real vector: 2 SGD steps on 64 real images."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = get_model(SPEC.arch, **SPEC.builder_kwargs())
    base_path = save_model_file(folder / "base.safetensors", model, SPEC, {"name": "test-base"})
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _images(datasets_dir, "train", 64)
    fine_tune(model, x, y, steps=2, lr=0.05)
    tuned_path = save_model_file(folder / "tuned.safetensors", model, SPEC, {"name": "tuned"})
    tensors = compute_vector(base_state, model.state_dict())
    return ModelKit(folder, base_path, sha256_file(base_path), tuned_path, tensors)


def tuned_metrics(kit: ModelKit, datasets_dir: Path) -> dict[str, Any]:
    """Metrics (with bootstrap intervals) of the kit's tuned model on 64 real
    PneumoniaMNIST test images."""
    model, _ = load_model_file(kit.tuned_path)
    x, y = _images(datasets_dir, "test", 64)
    with torch.inference_mode():
        probs = torch.softmax(model.eval()(x), dim=1).numpy()
    return compute_metrics(y.numpy(), probs, intervals=True).model_dump()


def oversized_header_file(kit: ModelKit, hospital: str, header_bytes: int) -> Path:
    """A well-formed safetensors file whose JSON header is ``header_bytes`` long."""
    meta = kit.metadata(hospital).model_dump_json()
    doc = {"__metadata__": {"medvec.format": "vector", "medvec.vector": meta}}
    raw = json.dumps(doc).encode()
    raw += b" " * (header_bytes - len(raw))
    return kit.raw(struct.pack("<Q", len(raw)) + raw, "big-header")


def benchmark_npz(path: Path, datasets_dir: Path, count: int = 40) -> Path:
    with np.load(datasets_dir / "pneumoniamnist.npz") as data:
        arrays = {
            f"{split}_{kind}": data[f"{split}_{kind}"][:count]
            for split in ("val", "test")
            for kind in ("images", "labels")
        }
    np.savez(path, **arrays)
    return path
