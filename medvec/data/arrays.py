"""``ImageArrayDataset``: a whole labelled image set held as two in-memory tensors.

Every reader (MedMNIST ``.npz``, image folders, DICOM) ends here, so training and
evaluation see one interface. Pixels stay uint8 in ``N, C, H, W`` layout (a quarter
of the memory of floats); items and batches are converted on the way out.
``batch_arrays`` lets the training loop take whole batches by index, also through
``torch.utils.data.Subset`` wrappers, without touching single items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset

from medvec.data.transforms import eval_transform, resize_batch, to_float
from medvec.errors import DatasetError

__all__ = ["ImageArrayDataset", "as_label_vector", "batch_arrays", "in_memory_arrays", "to_nchw"]

RESIZE_CHUNK = 1024


def as_label_vector(labels: Any) -> Tensor:
    """Labels shaped ``(N,)`` or ``(N, 1)`` as an int64 vector; anything else is refused."""
    array = np.asarray(labels)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DatasetError(
            f"labels have shape {array.shape}; expected (N,) or (N, 1) class indices",
            hint="multi-label targets are not supported; give one class index per image",
        )
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DatasetError(f"labels have dtype {array.dtype}; expected class indices")
    if array.size and (array.min() < 0 or not np.all(np.mod(array, 1) == 0)):
        raise DatasetError("labels must be non-negative whole class indices")
    return torch.from_numpy(array.astype(np.int64, copy=False).copy())


def to_nchw(images: Any) -> Tensor:
    """Images ``(N, H, W)`` or channels-last ``(N, H, W, C)`` (C in 1, 3, 4) as uint8 NCHW."""
    tensor = torch.as_tensor(np.asarray(images))
    if tensor.dtype != torch.uint8:
        raise DatasetError(
            f"images have dtype {tensor.dtype}; expected uint8 pixels",
            hint="scale to 0..255 and store as uint8",
        )
    if tensor.ndim == 3:
        return tensor.unsqueeze(1).contiguous()
    if tensor.ndim == 4 and tensor.shape[-1] in (1, 3, 4):
        return tensor[..., :3].permute(0, 3, 1, 2).contiguous()
    raise DatasetError(
        f"images have shape {tuple(tensor.shape)}; expected (N, H, W) or (N, H, W, C)",
        hint="MedMNIST stores grey images as (N, H, W) and RGB ones channels-last",
    )


class ImageArrayDataset(Dataset[tuple[Tensor, Tensor]]):
    """A labelled image set in memory; items are normalised float ``C, H, W`` tensors.

    ``in_channels`` sets the channel count the items have (grey repeated to 3,
    RGB averaged to 1; ``None`` keeps the data's own); ``image_size`` resizes the
    stored pixels once, at construction (``None`` keeps them).
    """

    def __init__(
        self,
        images: Any,
        labels: Any,
        in_channels: int | None = None,
        image_size: int | None = None,
        *,
        classes: Sequence[str] | None = None,
    ) -> None:
        pixels = to_nchw(images)
        targets = as_label_vector(labels)
        if pixels.shape[0] != targets.shape[0]:
            raise DatasetError(
                f"{pixels.shape[0]} images but {targets.shape[0]} labels",
                hint="every image needs exactly one label",
            )
        if in_channels is not None and in_channels not in (1, 3):
            raise DatasetError(f"in_channels must be 1 or 3, not {in_channels}")
        self.pixels = _resize_pixels(pixels, image_size) if image_size else pixels
        self.labels = targets
        self.in_channels = in_channels or int(pixels.shape[1])
        self.image_size = int(self.pixels.shape[-1])
        self.classes = list(classes) if classes is not None else None

    @property
    def num_classes(self) -> int:
        if self.classes is not None:
            return len(self.classes)
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = eval_transform(self.pixels[index : index + 1], self.in_channels)[0]
        return image, self.labels[index]

    def batch(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Normalised images and labels of ``indices`` in one go."""
        return eval_transform(self.pixels[indices], self.in_channels), self.labels[indices]


def _resize_pixels(pixels: Tensor, size: int) -> Tensor:
    if tuple(pixels.shape[-2:]) == (size, size):
        return pixels
    chunks = []
    for start in range(0, pixels.shape[0], RESIZE_CHUNK):
        chunk = resize_batch(to_float(pixels[start : start + RESIZE_CHUNK]), size)
        chunks.append(chunk.mul_(255.0).round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(chunks) if chunks else pixels.new_empty((0, pixels.shape[1], size, size))


def batch_arrays(dataset: Any) -> tuple[ImageArrayDataset, Tensor] | None:
    """The ``ImageArrayDataset`` under ``dataset`` and the indices it selects, or ``None``.

    Unwraps (nested) ``Subset``s so that loops can gather whole batches from the
    in-memory tensors instead of collating single items.
    """
    indices: Tensor | None = None
    while isinstance(dataset, Subset):
        picked = torch.as_tensor(list(dataset.indices), dtype=torch.long)
        indices = picked if indices is None else picked[indices]
        dataset = dataset.dataset
    if not isinstance(dataset, ImageArrayDataset):
        return None
    if indices is None:
        indices = torch.arange(len(dataset))
    return dataset, indices


def in_memory_arrays(dataset: Any, needed_by: str) -> tuple[Tensor, Tensor]:
    """The uint8 pixels and labels ``dataset`` selects from an in-memory set.

    For loops that need whole tensors rather than items; any other dataset is a
    ``DatasetError`` that names what needed it.
    """
    arrays = batch_arrays(dataset)
    if arrays is None:
        raise DatasetError(
            f"{needed_by} needs an in-memory image dataset (ImageArrayDataset or a Subset of one)",
            hint="load the data with medvec.data.load_dataset or load_npz",
        )
    base, indices = arrays
    return base.pixels[indices], base.labels[indices]
