"""Architectures by name (ResNet-18/50 and their FL-RA variants), checkpoints and model files."""

from medvec.models.checkpoint import LoadReport, load_torchvision_checkpoint
from medvec.models.files import (
    load_model_file,
    read_model_provenance,
    read_model_spec,
    save_model_file,
)
from medvec.models.flra import build_flra_resnet, flra_resnet18, flra_resnet50
from medvec.models.registry import (
    ModelRegistry,
    ModelSpec,
    build_model,
    get_model,
    list_models,
    register_model,
)
from medvec.models.resnet import resnet18, resnet50

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
    "resnet18",
    "resnet50",
    "save_model_file",
]
