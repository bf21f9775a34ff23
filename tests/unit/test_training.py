"""fine_tune on real PneumoniaMNIST with a tiny CNN: it learns, is seeded, reports
progress, and trains with DP-SGD under a real accountant."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from torch.utils.data import Subset, TensorDataset

import medvec.training
import medvec.training_dp
from medvec.data import ImageArrayDataset, load_medmnist
from medvec.data.transforms import eval_transform
from medvec.errors import MedVecError, PrivacyError
from medvec.evaluation import evaluate_model
from medvec.privacy import accountant_history, compose_epsilon, dp_sgd_epsilon
from medvec.training import (
    TrainConfig,
    fine_tune,
    lr_factor,
    make_optimizer,
    model_in_channels,
    resolve_device,
)

N_TRAIN = 500


def tiny_cnn(in_channels: int = 3, num_classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, num_classes),
    )


@pytest.fixture(scope="module")
def pneumonia(datasets_dir: Path) -> tuple[ImageArrayDataset, ImageArrayDataset]:
    train = load_medmnist("pneumoniamnist", "train", datasets_dir)
    return train, load_medmnist("pneumoniamnist", "test", datasets_dir)


def _tensor_dataset(dataset: ImageArrayDataset, n: int) -> TensorDataset:
    """The first ``n`` items as a plain map-style dataset (trained through a DataLoader)."""
    items = [dataset[i] for i in range(n)]
    return TensorDataset(torch.stack([x for x, _ in items]), torch.stack([y for _, y in items]))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fine_tune_improves_held_out_accuracy(pneumonia: Any) -> None:
    """The default recipe (SGD, warm-up + cosine, augmentation) learns from scratch when it
    is given enough steps: a step budget, as a hospital with little data would use."""
    train, test = pneumonia
    model = tiny_cnn()
    before = evaluate_model(model, test, device="cpu")
    config = TrainConfig(steps=300, batch_size=32, seed=0)
    result = fine_tune(model, Subset(train, range(N_TRAIN)), config, device="cpu")
    after = evaluate_model(model, test, device="cpu")
    assert after.accuracy > before.accuracy + 0.05
    assert after.auc_macro is not None and before.auc_macro is not None
    assert after.auc_macro > before.auc_macro + 0.1
    per_epoch = math.ceil(N_TRAIN / 32)  # 16 batches: 15 of 32 and one of 20
    full_epochs, rest = divmod(300, per_epoch)  # 18 passes, then 12 steps of full batches
    assert result.steps == 300 and result.epochs == full_epochs + 1
    assert result.samples == full_epochs * N_TRAIN + rest * 32
    assert result.device == "cpu" and not result.amp and result.privacy == {}
    assert 0 < result.loss < 1 and 0.5 < result.accuracy <= 1
    assert result.images_per_second > 0 and result.epsilon is None


def test_fine_tune_is_seeded_and_deterministic_on_cpu(pneumonia: Any) -> None:
    train, _ = pneumonia
    subset = Subset(train, range(200))
    states = []
    for seed in (5, 5, 6):
        model = tiny_cnn()
        config = TrainConfig(epochs=1, lr=0.01, batch_size=32, seed=seed, augment=True)
        fine_tune(model, subset, config, device="cpu")
        states.append(_state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_augmentation_changes_training(pneumonia: Any) -> None:
    train, _ = pneumonia
    subset = Subset(train, range(128))
    runs = []
    for augment in (False, True):
        model = tiny_cnn()
        fine_tune(model, subset, TrainConfig(batch_size=32, augment=augment), device="cpu")
        runs.append(_state(model)["0.weight"])
    assert not torch.equal(runs[0], runs[1])


def test_on_step_reports_progress(pneumonia: Any) -> None:
    train, _ = pneumonia
    calls: list[tuple[int, int, dict[str, float]]] = []

    def on_step(step: int, total: int, **stats: float) -> None:
        calls.append((step, total, stats))

    config = TrainConfig(epochs=2, batch_size=50)
    fine_tune(tiny_cnn(), Subset(train, range(300)), config, device="cpu", on_step=on_step)
    assert [c[0] for c in calls] == list(range(1, 13)) and {c[1] for c in calls} == {12}
    last = calls[-1][2]
    assert set(last) == {"loss", "acc"} and last["loss"] > 0 and 0 <= last["acc"] <= 1


def test_grey_data_feeds_one_and_three_channel_models(pneumonia: Any) -> None:
    train, val = pneumonia
    for channels in (1, 3):
        model = tiny_cnn(in_channels=channels)
        assert model_in_channels(model) == channels
        fine_tune(model, Subset(train, range(64)), TrainConfig(batch_size=32), device="cpu")
        assert evaluate_model(model, Subset(val, range(50)), device="cpu").n == 50


def test_any_map_style_dataset_trains(pneumonia: Any) -> None:
    train, _ = pneumonia
    dataset = _tensor_dataset(train, 96)
    result = fine_tune(tiny_cnn(in_channels=1), dataset, TrainConfig(batch_size=32), device="cpu")
    assert result.samples == 96 and result.steps == 3


def test_config_is_frozen_and_validated() -> None:
    config = TrainConfig()
    with pytest.raises(ValidationError):
        config.epochs = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="dp_sgd needs dp_clip"):
        TrainConfig(dp_sgd=True, dp_clip=1.0)
    with pytest.raises(ValidationError):
        TrainConfig(learning_rate=0.1)  # type: ignore[call-arg]
    assert TrainConfig(epochs=2).model_dump()["epochs"] == 2


def test_dp_knobs_without_dp_sgd_are_refused(pneumonia: Any) -> None:
    train, _ = pneumonia
    with pytest.raises(PrivacyError, match="DP-SGD only"):
        fine_tune(tiny_cnn(), Subset(train, range(10)), TrainConfig(dp_clip=1.0), device="cpu")


def test_lr_factor_warms_up_linearly_then_decays_along_a_cosine() -> None:
    config = TrainConfig(warmup=0.2)  # 100 steps: 20 of warm-up, then 80 of decay
    factors = [lr_factor(step, 100, config) for step in range(101)]
    assert factors[:20] == pytest.approx([(step + 1) / 21 for step in range(20)])
    assert factors[20] == 1.0  # the peak, right after the warm-up
    quarter = 0.5 * (1 + math.cos(math.pi / 4))
    assert [factors[40], factors[60], factors[80]] == pytest.approx([quarter, 0.5, 1 - quarter])
    assert all(a > b for a, b in zip(factors[20:], factors[21:], strict=False))
    assert 0 < factors[99] < 1e-3  # the last step's rate is all but zero ...
    assert factors[100] == pytest.approx(0.0, abs=1e-12)  # ... and zero once it is taken


def test_lr_factor_constant_schedule_and_no_warm_up() -> None:
    constant = TrainConfig(schedule="constant", warmup=0.2)
    assert [lr_factor(step, 10, constant) for step in range(10)] == [1 / 3, 2 / 3] + [1.0] * 8
    assert lr_factor(0, 10, TrainConfig(warmup=0)) == 1.0
    # the warm-up is a whole number of steps even where the fraction is inexact in binary
    inexact = TrainConfig(warmup=0.07, schedule="constant")
    assert [lr_factor(step, 100, inexact) for step in (5, 6, 7)] == [6 / 8, 7 / 8, 1.0]


@pytest.mark.parametrize(
    ("steps", "map_style", "epochs"),
    [(7, False, 3), (7, True, 3), (2, False, 1)],
    ids=["cycles", "cycles-dataloader", "stops-inside-an-epoch"],
)
def test_step_budget_is_honoured_exactly(
    pneumonia: Any, steps: int, map_style: bool, epochs: int
) -> None:
    train, _ = pneumonia
    dataset: Any = Subset(train, range(96))  # 3 batches of 32 per epoch
    if map_style:
        dataset = _tensor_dataset(train, 96)
    calls: list[tuple[int, int]] = []

    def on_step(step: int, total: int, **_: float) -> None:
        calls.append((step, total))

    config = TrainConfig(steps=steps, epochs=5, batch_size=32)  # steps override epochs
    result = fine_tune(tiny_cnn(), dataset, config, device="cpu", on_step=on_step)
    assert result.steps == steps and result.epochs == epochs and result.samples == 32 * steps
    assert calls == [(step, steps) for step in range(1, steps + 1)]


@pytest.mark.parametrize("dp_sgd", [False, True], ids=["plain", "dp-sgd"])
def test_optimizer_steps_at_the_scheduled_rate(
    pneumonia: Any, monkeypatch: pytest.MonkeyPatch, dp_sgd: bool
) -> None:
    """The rate each optimiser step really uses, read from the optimiser as it steps."""
    train, _ = pneumonia
    rates: list[float] = []

    def recording_optimizer(params: Any, config: TrainConfig) -> Any:
        optimizer = make_optimizer(params, config)
        optimizer.register_step_pre_hook(lambda opt, *_: rates.append(opt.param_groups[0]["lr"]))
        return optimizer

    monkeypatch.setattr(medvec.training, "make_optimizer", recording_optimizer)
    monkeypatch.setattr(medvec.training_dp, "make_optimizer", recording_optimizer)
    # 96 images in batches of 16: 6 steps an epoch (DP-SGD: 6 Poisson draws), 12 in all
    budget = {"epochs": 2, "dp_sgd": True, "dp_clip": 1.0, "dp_noise": 1.0} if dp_sgd else {}
    config = TrainConfig(lr=0.2, warmup=0.25, batch_size=16, **(budget or {"steps": 12}))
    result = fine_tune(tiny_cnn(), Subset(train, range(96)), config, device="cpu")
    assert result.steps == len(rates) == 12
    assert rates[:4] == pytest.approx([0.05, 0.1, 0.15, 0.2])  # 3 warm-up steps, then the peak
    assert rates == pytest.approx([0.2 * lr_factor(step, 12, config) for step in range(12)])


def test_label_smoothing_is_in_the_loss(pneumonia: Any) -> None:
    """One step on one full batch: the reported loss is the smoothed cross-entropy of the
    untrained model's outputs, computed here from its log-probabilities."""
    train, _ = pneumonia
    model = tiny_cnn()
    images, labels = eval_transform(train.pixels[:64], 3), train.labels[:64]
    with torch.no_grad():  # a copy: the forward pass in train mode moves BatchNorm's statistics
        log_p = copy.deepcopy(model).train()(images).log_softmax(1)
    nll = float(-log_p[torch.arange(64), labels].mean())
    uniform = float(-log_p.mean())
    losses = []
    for smoothing in (0.0, 0.3):
        config = TrainConfig(steps=1, batch_size=64, augment=False, label_smoothing=smoothing)
        result = fine_tune(copy.deepcopy(model), Subset(train, range(64)), config, device="cpu")
        assert result.loss == pytest.approx((1 - smoothing) * nll + smoothing * uniform, rel=1e-5)
        losses.append(result.loss)
    assert losses[1] != pytest.approx(losses[0], rel=1e-3)


def test_dp_sgd_refuses_a_step_budget() -> None:
    with pytest.raises(ValidationError, match="DP-SGD budgets are in epochs"):
        TrainConfig(steps=100, dp_sgd=True, dp_clip=1.0, dp_noise=1.0)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device().type == expected
    if not torch.cuda.is_available():
        with pytest.raises(MedVecError, match="CUDA is not available"):
            resolve_device("cuda")


def test_dp_sgd_trains_reports_finite_epsilon_and_freezes_batchnorm(pneumonia: Any) -> None:
    train, _ = pneumonia
    model = tiny_cnn()
    before = _state(model)
    config = TrainConfig(
        epochs=2, lr=0.01, batch_size=50, dp_sgd=True, dp_clip=1.0, dp_noise=1.0, dp_delta=1e-5
    )
    result = fine_tune(model, Subset(train, range(N_TRAIN)), config, device="cpu")
    privacy = result.privacy
    assert privacy["accountant"] == "rdp" and privacy["dp_sgd"] is True
    assert privacy["sample_rate"] == pytest.approx(50 / N_TRAIN)
    assert privacy["steps"] == result.steps == 2 * (N_TRAIN // 50)
    expected = dp_sgd_epsilon(1.0, 50 / N_TRAIN, result.steps, 1e-5)
    assert math.isfinite(result.epsilon or math.nan) and result.epsilon == pytest.approx(expected)
    assert result.delta == 1e-5
    # the accountant's history travels with the vector, so a registry can compose it
    assert privacy["history"] == [[1.0, pytest.approx(50 / N_TRAIN), result.steps]]
    assert compose_epsilon(accountant_history(privacy) or [], 1e-5) == pytest.approx(expected)
    after = _state(model)
    for key in ("1.weight", "1.bias", "1.running_mean", "1.running_var"):
        assert torch.equal(before[key], after[key]), key  # BatchNorm frozen at the base's values
    assert not torch.equal(before["0.weight"], after["0.weight"])
    assert all(p.requires_grad for p in model.parameters())
    assert all(getattr(p, "grad_sample", None) is None for p in model.parameters())
    # the plain model works again after Opacus is gone
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 2)


def test_dp_sgd_noise_and_sampling_are_not_reproducible_from_the_seed(pneumonia: Any) -> None:
    """The recorded seed fixes augmentation, not what makes DP-SGD private: the same run
    twice draws other batches and other noise, so nothing recorded regenerates them."""
    train, _ = pneumonia
    config = TrainConfig(epochs=1, batch_size=25, dp_sgd=True, dp_clip=1.0, dp_noise=1.0, seed=3)
    runs = []
    for _ in range(2):
        model = tiny_cnn()
        fine_tune(model, Subset(train, range(100)), config, device="cpu")
        runs.append(_state(model)["0.weight"])
    assert not torch.allclose(runs[0], runs[1])


def test_poisson_sampling_is_secret_and_at_the_rate() -> None:
    from medvec.privacy import poisson_subsample

    draws = []
    for _ in range(2):
        torch.manual_seed(0)
        draws.append(poisson_subsample(10_000, 0.1))
    assert not torch.equal(draws[0], draws[1])
    for drawn in draws:  # 1000 expected, std 30
        assert 850 < len(drawn) < 1150 and len(set(drawn.tolist())) == len(drawn)
        assert int(drawn.min()) >= 0 and int(drawn.max()) < 10_000


def test_dp_sgd_survives_empty_poisson_batches(pneumonia: Any) -> None:
    train, _ = pneumonia
    model = tiny_cnn()
    config = TrainConfig(epochs=2, batch_size=1, dp_sgd=True, dp_clip=1.0, dp_noise=1.0)
    result = fine_tune(model, Subset(train, range(20)), config, device="cpu")
    # sample rate 1/20: each step draws no sample with probability 0.95^20 ~ 0.36,
    # and such a step still counts (noise only), as the accountant assumes
    assert result.steps == 40 and result.samples > 0
    assert result.privacy["steps"] == 40 and math.isfinite(result.privacy["epsilon"])
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_named_recipes_are_train_configs_with_settings_on_top() -> None:
    from medvec.training_config import TrainConfig, recipe_config

    assert recipe_config("sgd", epochs=2) == TrainConfig(epochs=2)
    adam = recipe_config("adam", epochs=2, seed=3)
    assert (adam.optimizer, adam.lr, adam.schedule, adam.augment) == (
        "adam",
        1e-3,
        "constant",
        False,
    )
    assert (adam.weight_decay, adam.warmup, adam.epochs, adam.seed) == (0.0, 0.0, 2, 3)
    assert recipe_config("adam", lr=5e-4).lr == 5e-4
    with pytest.raises(KeyError):
        recipe_config("rmsprop")  # type: ignore[arg-type]
