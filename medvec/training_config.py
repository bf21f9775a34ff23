"""``TrainConfig``, the fine-tuning recipe, apart from the loop that runs it.

It needs pydantic only, not torch: the hospital CLI reads its defaults and help
when it starts, and ``medvec login`` must not pay for importing torch.
``medvec.training`` re-exports it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["RECIPES", "Optimizer", "Recipe", "Schedule", "TrainConfig", "recipe_config"]

Optimizer = Literal["adam", "adamw", "sgd"]
Schedule = Literal["cosine", "constant"]
Recipe = Literal["sgd", "adam"]


class TrainConfig(BaseModel):
    """Training settings; recorded as they are in every data vector's metadata.

    The defaults are the fine-tuning recipe measured in docs/results.md ("Training
    recipe"): SGD with Nesterov momentum, weight decay, a linear warm-up then a
    cosine decay to zero, flips and crops. ``steps`` fixes the budget in optimiser
    steps instead of epochs, so that a hospital with little data still trains
    enough: the loop then cycles over the data as often as it takes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    epochs: int = Field(default=1, ge=1)
    steps: int | None = Field(default=None, ge=1)
    lr: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=64, ge=1)
    augment: bool = True
    seed: int = 0
    optimizer: Optimizer = "sgd"
    momentum: float = Field(default=0.9, ge=0, lt=1)
    nesterov: bool = True
    weight_decay: float = Field(default=5e-4, ge=0)
    schedule: Schedule = "cosine"
    warmup: float = Field(default=0.05, ge=0, lt=1)
    label_smoothing: float = Field(default=0.0, ge=0, lt=1)
    num_workers: int = Field(default=0, ge=0)
    amp: bool = True
    channels_last: bool = True
    dp_sgd: bool = False
    dp_clip: float | None = Field(default=None, gt=0)
    dp_noise: float | None = Field(default=None, ge=0)
    dp_delta: float = Field(default=1e-5, gt=0, lt=1)

    @model_validator(mode="after")
    def _dp_settings(self) -> TrainConfig:
        if self.dp_sgd and (self.dp_clip is None or self.dp_noise is None):
            raise ValueError("dp_sgd needs dp_clip (per-sample bound) and dp_noise (multiplier)")
        if self.dp_sgd and self.dp_noise == 0:
            raise ValueError("dp_sgd needs dp_noise > 0: without noise there is no guarantee")
        if self.dp_sgd and self.steps is not None:
            raise ValueError("DP-SGD budgets are in epochs (the accountant's unit); drop steps")
        return self


RECIPES: dict[str, dict[str, object]] = {
    # TrainConfig's defaults: best pooled and IID accuracy (docs/results.md)
    "sgd": {},
    # Adam at a constant rate, no weight decay, no augmentation: what merges best when
    # hospitals' label mixes differ (docs/results.md, "Non-IID: the local recipe")
    "adam": {
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "schedule": "constant",
        "warmup": 0.0,
        "augment": False,
    },
}


def recipe_config(recipe: Recipe, **settings: object) -> TrainConfig:
    """The named recipe's ``TrainConfig``, with ``settings`` (epochs, lr, seed ...) on top."""
    return TrainConfig.model_validate({**RECIPES[recipe], **settings})
