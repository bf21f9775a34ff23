"""MedVec core library: models, data vectors, merging, data, training and metrics.

No web, database or queue code lives here; the registry (``app``), the workers
(``worker``) and the hospital CLI (``hospital_cli``) build on it.

The most used names are importable from the package itself (``from medvec import
merge_files``). They resolve lazily, so that importing ``medvec.errors`` or
``medvec.hashing`` (as the CLI does for ``medvec login``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvec.lazy import lazy_attributes

__version__ = "0.1.0"

_PUBLIC: dict[str, str] = {
    "ModelSpec": "medvec.models",
    "build_model": "medvec.models",
    "get_model": "medvec.models",
    "list_models": "medvec.models",
    "load_model_file": "medvec.models",
    "save_model_file": "medvec.models",
    "VectorMetadata": "medvec.vectors",
    "compute_vector": "medvec.vectors",
    "apply_vector": "medvec.vectors",
    "load_vector": "medvec.vectors",
    "save_vector": "medvec.vectors",
    "validate_vector": "medvec.vectors",
    "get_strategy": "medvec.merging",
    "list_strategies": "medvec.merging",
    "merge_files": "medvec.merging",
    "merge_state_dicts": "medvec.merging",
    "load_dataset": "medvec.data",
    "load_medmnist": "medvec.data",
    "TrainConfig": "medvec.training_config",
    "fine_tune": "medvec.training",
    "evaluate_model": "medvec.evaluation",
    "compute_metrics": "medvec.metrics",
}

__all__ = [
    "__version__",
    "ModelSpec",
    "build_model",
    "get_model",
    "list_models",
    "load_model_file",
    "save_model_file",
    "VectorMetadata",
    "compute_vector",
    "apply_vector",
    "load_vector",
    "save_vector",
    "validate_vector",
    "get_strategy",
    "list_strategies",
    "merge_files",
    "merge_state_dicts",
    "load_dataset",
    "load_medmnist",
    "TrainConfig",
    "fine_tune",
    "evaluate_model",
    "compute_metrics",
]

if TYPE_CHECKING:
    from medvec.data import load_dataset, load_medmnist
    from medvec.evaluation import evaluate_model
    from medvec.merging import get_strategy, list_strategies, merge_files, merge_state_dicts
    from medvec.metrics import compute_metrics
    from medvec.models import (
        ModelSpec,
        build_model,
        get_model,
        list_models,
        load_model_file,
        save_model_file,
    )
    from medvec.training import fine_tune
    from medvec.training_config import TrainConfig
    from medvec.vectors import (
        VectorMetadata,
        apply_vector,
        compute_vector,
        load_vector,
        save_vector,
        validate_vector,
    )


__getattr__, __dir__ = lazy_attributes(__name__, _PUBLIC, __all__)
