"""Datasets: 8-bit images ``[N, C, H, W]`` (uint8) with integer labels.

``digits``  scikit-learn's bundled 8x8 digits (no download; the default).
``mnist``, ``fashion-mnist``  the four standard IDX files (``.gz`` or not).
``cifar10`` the standard python pickle batches.

See :func:`load_dataset`; :func:`download` fetches the last three into the dataset
cache (``soniq data download NAME``), where :func:`load_dataset` finds them;
:func:`hold_out_validation` splits the validation set off the training images.
"""

from .dataset import DATASET_NAMES, Dataset, DatasetError, load_dataset
from .download import download
from .validation import hold_out_validation

__all__ = ["DATASET_NAMES", "Dataset", "DatasetError", "download", "hold_out_validation",
           "load_dataset"]
