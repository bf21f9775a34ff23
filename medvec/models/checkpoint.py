"""Import a local torchvision-format ResNet checkpoint into a MedVec model.

Only local files are read (no download): ``.pth``/``.pt`` state dicts, optionally
wrapped as ``{"state_dict": ...}`` or ``{"model": ...}`` and optionally prefixed
``module.`` (DataParallel), or ``.safetensors``. Keys that fit are loaded; the rest
are reported, each with the reason, instead of failing the whole import:

* ``fc.*`` when the number of classes differs (the head stays freshly initialised);
* ``conv1.weight`` when the stem differs (7x7 ImageNet stem vs 3x3 small-input stem);
* ``conv1.weight`` with a different number of input channels is *adapted*: for one
  channel the RGB kernel is summed over channels (a grey image repeated to RGB gives
  the same response); for other counts the kernel is tiled and rescaled by 3 / C;
* FL-RA keys missing from a plain ResNet checkpoint are reset so that the attention
  starts silent (output projection zero, ``alpha = beta = 1``) and every block
  computes exactly the pretrained block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict
from safetensors.torch import load_file
from torch import Tensor, nn

from medvec.errors import ModelError

__all__ = ["LoadReport", "adapt_input_conv", "load_torchvision_checkpoint", "read_state_dict"]

_WRAPPER_KEYS = ("state_dict", "model")


class LoadReport(BaseModel):
    """What ``load_torchvision_checkpoint`` did with every key."""

    model_config = ConfigDict(frozen=True)

    path: str
    loaded: list[str]
    adapted: dict[str, str]
    skipped: dict[str, str]
    missing: dict[str, str]
    unexpected: list[str]

    def summary(self) -> str:
        return (
            f"{len(self.loaded)} loaded, {len(self.adapted)} adapted, {len(self.skipped)} "
            f"skipped, {len(self.missing)} missing, {len(self.unexpected)} unexpected"
        )


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a torchvision-format state dict from a local file (CPU tensors)."""
    path = Path(path)
    hint = "give a local torchvision state dict (.pth/.pt) or a .safetensors file"
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist", hint=hint, path=str(path))
    try:
        if path.suffix == ".safetensors":
            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a bad file
        raise ModelError(
            f"cannot read checkpoint {path}: {exc}", hint=hint, path=str(path)
        ) from exc
    for key in _WRAPPER_KEYS:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not obj:
        raise ModelError(f"checkpoint {path} holds no state dict", hint=hint, path=str(path))
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    if not all(isinstance(v, Tensor) for v in state.values()):
        raise ModelError(f"checkpoint {path} holds non-tensor values", hint=hint, path=str(path))
    return state


def adapt_input_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Turn an RGB first-layer kernel (O, 3, k, k) into one for ``in_channels`` inputs."""
    if in_channels == weight.shape[1]:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    tiled = weight.repeat(1, repeats, 1, 1)[:, :in_channels]
    return tiled * (weight.shape[1] / in_channels)


def _is_flra_key(key: str) -> bool:
    return ".attn." in key or key.endswith((".alpha", ".beta"))


def _match(key: str, source: Tensor, target: Tensor) -> tuple[Tensor | None, str]:
    """The tensor to load for ``key`` (or None) and a note on what was done."""
    if source.shape == target.shape:
        return source, ""
    if key.startswith("fc."):
        return None, (
            f"num_classes differs (checkpoint {source.shape[0]}, model {target.shape[0]})"
        )
    if key == "conv1.weight" and source.ndim == target.ndim == 4:
        if source.shape[2:] != target.shape[2:]:
            return None, (
                f"stem differs (checkpoint {tuple(source.shape[2:])} kernel, model "
                f"{tuple(target.shape[2:])}); the model keeps its own initialised conv1"
            )
        if source.shape[0] == target.shape[0]:
            how = "summed over RGB" if target.shape[1] == 1 else "tiled and rescaled"
            return adapt_input_conv(source, target.shape[1]), (
                f"in_channels {source.shape[1]} -> {target.shape[1]}: kernel {how}"
            )
    return None, f"shape differs (checkpoint {tuple(source.shape)}, model {tuple(target.shape)})"


def load_torchvision_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load the keys of a local torchvision checkpoint that fit ``model``; report the rest.

    Raises ``ModelError`` when the file cannot be read or not a single key fits.
    """
    source = read_state_dict(path)
    target = model.state_dict()
    new_state: dict[str, Tensor] = {}
    loaded: list[str] = []
    adapted: dict[str, str] = {}
    skipped: dict[str, str] = {}
    missing: dict[str, str] = {}
    for key, current in target.items():
        if key not in source:
            if _is_flra_key(key):
                missing[key] = "FL-RA attention, not in a plain ResNet; starts silent"
            else:
                missing[key] = "not in checkpoint; keeps its initial value"
            continue
        value, note = _match(key, source[key], current)
        if value is None:
            skipped[key] = note
            continue
        new_state[key] = value.to(dtype=current.dtype)
        if note:
            adapted[key] = note
        else:
            loaded.append(key)
    if not new_state:
        raise ModelError(
            f"no key of checkpoint {path} fits the model",
            hint="is it a torchvision ResNet state dict of the same depth?",
            path=str(path),
        )
    _reset_fusion_weights(model, missing)
    model.load_state_dict(new_state, strict=False)
    return LoadReport(
        path=str(path),
        loaded=loaded,
        adapted=adapted,
        skipped=skipped,
        missing=missing,
        unexpected=sorted(set(source) - set(target)),
    )


def _reset_fusion_weights(model: nn.Module, missing: Mapping[str, str]) -> None:
    """Silence the attention of every FL-RA block whose fusion weights the checkpoint
    lacks, so that the block is the pretrained block exactly."""
    from medvec.models.flra import silence_attention

    for name, module in model.named_modules():
        if f"{name}.alpha".lstrip(".") in missing and hasattr(module, "attn"):
            silence_attention(module)
