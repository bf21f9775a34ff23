"""The lambda-tuning job's pieces that need no services: the grid scan and the default grid."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from app.services.merges import default_lambda_grid
from medvec.merging import merge_state_dicts
from medvec.models import ModelSpec
from medvec.vectors import compute_vector, is_running_stat
from tests.cli.tiny import TINY, _tiny_cnn, ensure_registered
from worker.tune import scan_grid


def test_the_scan_scales_weights_by_lambda_but_not_running_statistics() -> None:
    ensure_registered()
    spec = ModelSpec(arch=TINY, num_classes=2, in_channels=3, image_size=28)
    torch.manual_seed(0)
    base = _tiny_cnn(num_classes=2).state_dict()
    vectors = []
    for seed in (1, 2):
        generator = torch.Generator().manual_seed(seed)
        tuned = {
            k: v + 0.1 * torch.rand(v.shape, generator=generator) if v.is_floating_point() else v
            for k, v in base.items()
        }
        vectors.append(compute_vector(base, tuned))
    summed = merge_state_dicts(base, vectors, strategy="task_arithmetic")
    delta = {k: summed[k] - v for k, v in base.items() if v.is_floating_point()}

    def snapshot(model: torch.nn.Module) -> dict[str, Any]:
        return {k: v.clone() for k, v in model.state_dict().items()}

    scanned = scan_grid(base, delta, spec, [0.5, 3.0], snapshot)
    for lam, state in scanned.items():
        expected = merge_state_dicts(
            base, vectors, strategy="task_arithmetic", params={"lambda": lam}
        )
        assert any(is_running_stat(k) for k in state)
        for key, value in state.items():
            torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_default_grid_reaches_eight_times_the_mean() -> None:
    grid = default_lambda_grid(4)
    for multiple in (0.5, 1.0, 2.0, 4.0, 8.0):
        assert multiple / 4 in grid
    assert {0.1, 0.2, 0.3, 0.7, 1.0} <= set(grid)
    assert grid == sorted(set(grid)) and max(default_lambda_grid(2)) == pytest.approx(4.0)
