"""Datasets: MedMNIST ``.npz``, image folders and DICOM, held in memory as
``ImageArrayDataset``; batch transforms; IID and Dirichlet hospital splits."""

from medvec.data.arrays import ImageArrayDataset, as_label_vector, batch_arrays, to_nchw
from medvec.data.dicom import load_dicom_folder, read_dicom
from medvec.data.folder import load_image_folder
from medvec.data.loading import load_dataset
from medvec.data.medmnist import (
    DATASETS_ENV,
    load_medmnist,
    load_npz,
    medmnist_path,
    resolve_datasets_dir,
)
from medvec.data.splits import split_dirichlet, split_iid
from medvec.data.transforms import (
    augment_batch,
    eval_transform,
    match_channels,
    normalize_batch,
    train_transform,
)

__all__ = [
    "DATASETS_ENV",
    "ImageArrayDataset",
    "as_label_vector",
    "augment_batch",
    "batch_arrays",
    "eval_transform",
    "load_dataset",
    "load_dicom_folder",
    "load_image_folder",
    "load_medmnist",
    "load_npz",
    "match_channels",
    "medmnist_path",
    "normalize_batch",
    "read_dicom",
    "resolve_datasets_dir",
    "split_dirichlet",
    "split_iid",
    "to_nchw",
    "train_transform",
]
