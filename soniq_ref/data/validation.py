"""The validation split: the last images of the training set, held out.

A training run watches a validation set every epoch and evaluates the test set only
once, at the end, so nothing about the run is chosen on the test images. The split
is deterministic -- the last ``round(fraction * N)`` of the N training images in
their stored order, the same for every seed -- so a resumed run, a sweep's trials
and a re-run all hold out the same images::

    training images  0 .. N-V-1    trained on
                     N-V .. N-1    validation set (V = round(fraction * N))
"""

from __future__ import annotations

from dataclasses import replace

from .dataset import Dataset, DatasetError


def validation_size(n_train: int, fraction: float) -> int:
    """V = round(fraction * n_train), at least 1 when ``fraction > 0``; 0 for 0."""
    if fraction <= 0:
        return 0
    return max(1, int(round(fraction * n_train)))


def hold_out_validation(data: Dataset, fraction: float) -> Dataset:
    """``data`` with its last ``validation_size`` training images as ``x_val``/``y_val``.

    ``fraction`` 0 gives an empty validation set. DatasetError when the split would
    leave no image to train on.
    """
    n = len(data.x_train)
    n_val = validation_size(n, fraction)
    if n_val >= n:
        raise DatasetError(f"a validation fraction of {fraction:g} of {n} training images "
                           f"leaves none to train on; use a smaller fraction or more images")
    keep = n - n_val
    return replace(data, x_train=data.x_train[:keep], y_train=data.y_train[:keep],
                   x_val=data.x_train[keep:], y_val=data.y_train[keep:])
