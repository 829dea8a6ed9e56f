"""Datasets: 8-bit images ``[N, C, H, W]`` (uint8) with integer labels.

``digits``  scikit-learn's bundled 8x8 digits (no download; the default).
``mnist``, ``fashion-mnist``  the four standard IDX files (``.gz`` or not).
``cifar10`` the standard python pickle batches.

See :func:`load_dataset`; :func:`download` fetches the last three into the dataset
cache (``soniq data download NAME``), where :func:`load_dataset` finds them.
"""

from .dataset import DATASET_NAMES, Dataset, DatasetError, load_dataset
from .download import download

__all__ = ["DATASET_NAMES", "Dataset", "DatasetError", "download", "load_dataset"]
