"""Architectures by name (ResNet-18/50 and their FL-RA variants), checkpoints and model files.

Names resolve lazily: ``ModelSpec`` (``medvec.models.spec``) needs no torch, so the
registry can read specs from file headers without loading it; any other name
imports torch on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvec.lazy import lazy_attributes
from medvec.models.spec import ModelSpec

_LAZY: dict[str, str] = {
    "LoadReport": "medvec.models.checkpoint",
    "load_torchvision_checkpoint": "medvec.models.checkpoint",
    "load_model_file": "medvec.models.files",
    "read_model_provenance": "medvec.models.header",
    "read_model_spec": "medvec.models.header",
    "save_model_file": "medvec.models.files",
    "build_flra_resnet": "medvec.models.flra",
    "flra_resnet18": "medvec.models.flra",
    "flra_resnet50": "medvec.models.flra",
    "ModelRegistry": "medvec.models.registry",
    "build_model": "medvec.models.registry",
    "get_model": "medvec.models.registry",
    "list_models": "medvec.models.registry",
    "register_model": "medvec.models.registry",
    "resnet10": "medvec.models.resnet",
    "resnet18": "medvec.models.resnet",
    "resnet50": "medvec.models.resnet",
}

__all__ = [
    "LoadReport",
    "ModelRegistry",
    "ModelSpec",
    "build_flra_resnet",
    "build_model",
    "flra_resnet18",
    "flra_resnet50",
    "get_model",
    "list_models",
    "load_model_file",
    "load_torchvision_checkpoint",
    "read_model_provenance",
    "read_model_spec",
    "register_model",
    "resnet10",
    "resnet18",
    "resnet50",
    "save_model_file",
]

if TYPE_CHECKING:
    from medvec.models.checkpoint import LoadReport, load_torchvision_checkpoint
    from medvec.models.files import load_model_file, save_model_file
    from medvec.models.flra import build_flra_resnet, flra_resnet18, flra_resnet50
    from medvec.models.header import read_model_provenance, read_model_spec
    from medvec.models.registry import (
        ModelRegistry,
        build_model,
        get_model,
        list_models,
        register_model,
    )
    from medvec.models.resnet import resnet10, resnet18, resnet50


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
