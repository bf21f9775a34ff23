"""Contribution per hospital through the running sums, on real PneumoniaMNIST images: two
hospitals fine-tune a tiny CNN, a third sends a large random vector; the leave-one-out
model equals the merge of the others, and the harmful hospital's contribution is negative."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset

from medvec.data import load_medmnist
from medvec.evaluation import evaluate_model
from medvec.hashing import sha256_file
from medvec.merging import merge_files
from medvec.merging.contributions import leave_one_out
from medvec.merging.sums import Share, build_sums
from medvec.metrics import Metrics
from medvec.models import ModelSpec, load_model_file, save_model_file
from medvec.training import TrainConfig, fine_tune
from medvec.vectors import VectorMetadata, compute_vector, save_vector
from tests.cli.tiny import TINY, _tiny_cnn, ensure_registered

SPEC = ModelSpec(arch=TINY, num_classes=2, in_channels=3, image_size=28)


def test_leave_one_out_is_exact_and_a_harmful_hospital_contributes_negatively(
    datasets_dir: Path, tmp_path: Path
) -> None:
    ensure_registered()
    train = load_medmnist("pneumoniamnist", "train", datasets_dir, in_channels=3)
    val = load_medmnist("pneumoniamnist", "val", datasets_dir, in_channels=3)
    torch.manual_seed(0)
    model = _tiny_cnn(num_classes=2)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    base = save_model_file(tmp_path / "base.safetensors", base_state, SPEC, {"name": "b"})
    sha = sha256_file(base)
    shares = []
    for index in range(3):
        if index < 2:
            tuned = _tiny_cnn(num_classes=2)
            tuned.load_state_dict(base_state)
            part = Subset(train, list(range(index * 400, (index + 1) * 400)))
            config = TrainConfig(steps=40, batch_size=64, lr=0.05, augment=False, seed=index)
            fine_tune(tuned, part, config, device="cpu")
            vector = compute_vector(base_state, tuned.state_dict())
        else:  # a hospital sending a large random vector
            gen = torch.Generator().manual_seed(9)
            vector = {
                k: 3.0 * torch.randn(v.shape, generator=gen)
                for k, v in base_state.items()
                if v.is_floating_point()
            }
        meta = VectorMetadata(
            base_id="b", base_sha256=sha, hospital=f"h{index}", num_samples=400, spec=SPEC
        )
        path = save_vector(tmp_path / f"v{index}.safetensors", vector, meta)
        shares.append(Share(f"h{index}", path, 400.0))
    sums = tmp_path / "sums.safetensors"
    build_sums(base, shares, sums, base_sha256=sha)

    def score(model_file: Path) -> Metrics:
        merged, _ = load_model_file(model_file)
        return evaluate_model(merged, val, device="cpu", batch_size=256)

    everyone, contributions = leave_one_out(base, sums, shares, score, tmp_path / "loo")
    assert [c.member for c in contributions] == ["h0", "h1", "h2"]
    assert not list((tmp_path / "loo").iterdir())  # each model file removed once scored

    # exact: the model without h2 is the merge of h0 and h1
    others = merge_files(
        base,
        [shares[0].path, shares[1].path],
        tmp_path / "others.safetensors",
        strategy="weighted_mean",
        weights=[400.0, 400.0],
    )
    expected = score(others.path)
    without_h2 = contributions[2].without
    # the same model up to float rounding: at most one borderline image may differ
    assert abs(without_h2.accuracy - expected.accuracy) <= 1 / expected.n

    harmful = contributions[2]
    assert harmful.accuracy == everyone.accuracy - without_h2.accuracy
    assert harmful.accuracy < 0, (everyone.accuracy, without_h2.accuracy)
    assert len(harmful.sensitivity) == 2
    assert all(c.auc_macro is None or -1.0 <= c.auc_macro <= 1.0 for c in contributions)
