"""Datasets: MNIST, Fashion-MNIST, CIFAR-10, npz arrays, image folders and an embedded sample."""

from annt.data.datasets import (
    DATA_DIR_ENV,
    DATASETS,
    EMBEDDED,
    SPLITS,
    DatasetInfo,
    ImageSet,
    data_root,
    dataset_info,
    load_dataset,
)

__all__ = [
    "DATA_DIR_ENV",
    "DATASETS",
    "EMBEDDED",
    "SPLITS",
    "DatasetInfo",
    "ImageSet",
    "data_root",
    "dataset_info",
    "load_dataset",
]
