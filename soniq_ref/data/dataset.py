"""The dataset record and the loader by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATASET_NAMES = ("digits", "mnist", "cifar10")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


class DatasetError(ValueError):
    """A dataset that is missing or malformed; the message names what is wrong."""


@dataclass(frozen=True)
class Dataset:
    """x_*: uint8 [N, C, H, W] pixel codes; y_*: int64 [N] labels in 0..n_classes-1."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    class_names: tuple = ()     # label -> name; empty: the label's number

    @property
    def names(self) -> list[str]:
        """One name per class (``"0"``, ``"1"``, ... where the dataset has none)."""
        return list(self.class_names) or [str(c) for c in range(self.n_classes)]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x_train.shape[1:])


def load_dataset(name: str, data_dir=None) -> Dataset:
    """Load ``name`` (one of :data:`DATASET_NAMES`); ``data_dir`` is required for
    ``mnist`` and ``cifar10`` and ignored for ``digits``."""
    from .cifar10 import load_cifar10
    from .digits import load_digits
    from .mnist import load_mnist

    if name not in DATASET_NAMES:
        raise DatasetError(f"dataset must be one of {', '.join(DATASET_NAMES)}, got {name!r}")
    if name == "digits":
        return load_digits()
    if data_dir is None:
        raise DatasetError(f"dataset {name!r} needs --data-dir pointing at its folder")
    return load_mnist(data_dir) if name == "mnist" else load_cifar10(data_dir)
