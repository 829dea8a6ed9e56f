"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes), no download.

Pixels are integers 0..16; they become 8-bit codes ``rint(v * 255 / 16)``.
The train/test split is fixed (80/20, stratified by class with a fixed seed),
independent of the training seed, so every run is scored on the same images.
"""

from __future__ import annotations

import numpy as np

from .dataset import Dataset
from .sources import DIGIT_CLASSES

SPLIT_SEED = 0
TEST_FRACTION = 0.2


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int):
    """(train indices, test indices), both sorted; each class split in proportion."""
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(idx[:int(round(len(idx) * test_fraction))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def load_digits() -> Dataset:
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    train, test = stratified_split(y, TEST_FRACTION, SPLIT_SEED)
    return Dataset("digits", x[train], y[train], x[test], y[test], 10, DIGIT_CLASSES)
