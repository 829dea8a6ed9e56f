"""The dataset record and the loader by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10")


class DatasetError(ValueError):
    """A dataset that is missing or malformed; the message names what is wrong."""


@dataclass(frozen=True)
class Dataset:
    """x_*: uint8 [N, C, H, W] pixel codes; y_*: int64 [N] labels in 0..n_classes-1.

    ``x_val``, ``y_val``: the validation set a training run reports every epoch, held
    out of the training images by :func:`~soniq_ref.data.hold_out_validation` (None:
    not split yet, or no validation set).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    class_names: tuple[str, ...] = ()     # label -> name; empty: the label's number
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        """One name per class (``"0"``, ``"1"``, ... where the dataset has none)."""
        return list(self.class_names) or [str(c) for c in range(self.n_classes)]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.x_train.shape[1:])


def load_dataset(name: str, data_dir=None) -> Dataset:
    """Load ``name`` (one of :data:`DATASET_NAMES`).

    ``digits`` is bundled. The others are read from ``data_dir`` when given, else from
    the first complete copy among the dataset cache and the system folders
    (:mod:`.sources`); when there is none, the error names the download command.
    """
    from .cifar10 import load_cifar10
    from .digits import load_digits
    from .mnist import load_mnist
    from .sources import SOURCES, SYSTEM_DIRS, cache_dir, find_local

    if name not in DATASET_NAMES:
        raise DatasetError(f"dataset must be one of {', '.join(DATASET_NAMES)}, got {name!r}")
    if name == "digits":
        return load_digits()
    folder = data_dir if data_dir is not None else find_local(name)
    if folder is None:
        places = " or ".join(str(p) for p in (cache_dir(name),) + SYSTEM_DIRS.get(name, ()))
        raise DatasetError(f"dataset {name!r} is not in {places}; fetch it with: "
                           f"soniq data download {name} (or pass --data-dir DIR)")
    classes = SOURCES[name].class_names
    if name == "cifar10":
        return load_cifar10(folder)
    return load_mnist(folder, name=name, class_names=classes)
