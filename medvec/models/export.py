"""Export a model to ONNX for deployment outside PyTorch (onnxruntime, TensorRT, ...).

The graph takes ``images``: float32 ``(N, C, H, W)`` with ``C``, ``H`` and ``W`` from
the model's spec, already through the evaluation transform (pixels / 255, then
``(x - MEAN) / STD``, grey repeated to the model's channels), and returns ``logits``
``(N, num_classes)``; softmax them for probabilities. The batch axis is dynamic. The
spec and the preprocessing are written into the file's metadata, so the file alone
says how to feed it.

torch's exporter (``torch.onnx.export(..., dynamo=True)``, which needs ``onnxscript``)
is imported on first use: it is slow to import and only ``medvec pull --format onnx``
needs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvec.data.transforms import MEAN, STD
from medvec.errors import ModelError
from medvec.models.registry import ModelSpec

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx", "read_onnx_metadata"]

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
TRACE_BATCH = 2
"""Batch size of the example input the graph is traced with (any size runs afterwards)."""


def _metadata(spec: ModelSpec, provenance: dict[str, Any] | None) -> dict[str, str]:
    preprocessing = {
        "scale": "pixels / 255",
        "normalize": {"mean": MEAN, "std": STD},
        "channels": "grey repeated to in_channels",
    }
    return {
        "medvec.spec": spec.model_dump_json(),
        "medvec.preprocessing": json.dumps(preprocessing),
        "medvec.provenance": json.dumps(provenance or {}, sort_keys=True),
    }


def export_onnx(
    model: nn.Module,
    spec: ModelSpec,
    path: str | Path,
    *,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (in eval mode, on the CPU) as one self-contained ONNX file.

    The file is written to a temporary name beside ``path`` and renamed into place, so
    ``path`` is never a partial export.
    """
    import onnx

    path = Path(path)
    partial = path.with_name(f".{path.name}.partial")
    model = model.to("cpu").eval()
    example = torch.zeros(TRACE_BATCH, spec.in_channels, spec.image_size, spec.image_size)
    batch = torch.export.Dim("batch", min=1)
    try:
        # the exporter reports progress on stdout and warns about its own internals;
        # a command's output must stay its own
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(partial),
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        graph = onnx.load(str(partial))
        for key, value in _metadata(spec, provenance).items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(graph)
        onnx.save(graph, str(partial))
        os.replace(partial, path)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise ModelError(
            f"could not export {spec.arch} to ONNX: {exc}",
            hint="use the safetensors file with PyTorch (medvec predict) instead",
        ) from exc
    return path


def read_onnx_metadata(path: str | Path) -> dict[str, Any]:
    """The MedVec metadata of an exported file: ``spec``, ``preprocessing``, ``provenance``."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    props = {p.key: p.value for p in graph.metadata_props if p.key.startswith("medvec.")}
    return {key.removeprefix("medvec."): json.loads(value) for key, value in props.items()}
