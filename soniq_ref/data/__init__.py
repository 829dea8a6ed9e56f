"""Datasets: 8-bit images ``[N, C, H, W]`` (uint8) with integer labels.

``digits``  scikit-learn's bundled 8x8 digits (no download; the default).
``mnist``   a local folder with the four standard IDX files (``.gz`` or not).
``cifar10`` a local folder with the standard python pickle batches.

See :func:`load_dataset`.
"""

from .dataset import DATASET_NAMES, Dataset, DatasetError, load_dataset

__all__ = ["DATASET_NAMES", "Dataset", "DatasetError", "load_dataset"]
