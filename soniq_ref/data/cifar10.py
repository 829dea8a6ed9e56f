"""CIFAR-10 from a folder of the standard python pickle batches.

Expected: ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (the contents
of ``cifar-10-batches-py``). Each is a pickled dict with ``b"data"`` (uint8
[N, 3072], channel-major 3x32x32) and ``b"labels"`` (N ints in 0..9).

The batches are pickles, which can run code when loaded: they are read with an
unpickler that only admits plain containers and NumPy arrays, so a tampered
file fails instead of executing anything.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np

from .dataset import Dataset, DatasetError
from .sources import CIFAR10_CLASSES

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
           ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
           ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_batch(path: Path):
    try:
        batch = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as exc:  # any unpickling failure is a malformed file
        raise DatasetError(f"cannot read CIFAR-10 batch {path.name}: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DatasetError(f"CIFAR-10 batch {path.name} lacks b'data' or b'labels'")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise DatasetError(f"CIFAR-10 batch {path.name}: data must be uint8 [N, 3072], got "
                           f"{data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],) or (labels.size and not 0 <= labels.min() <= labels.max() <= 9):
        raise DatasetError(f"CIFAR-10 batch {path.name}: labels must be N ints in 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def load_cifar10(data_dir) -> Dataset:
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DatasetError(f"CIFAR-10 folder {folder} does not exist")
    missing = [n for n in TRAIN_BATCHES + (TEST_BATCH,) if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10 folder {folder} is missing {', '.join(missing)}")
    train = [_read_batch(folder / n) for n in TRAIN_BATCHES]
    x_test, y_test = _read_batch(folder / TEST_BATCH)
    return Dataset("cifar10", np.concatenate([x for x, _ in train]),
                   np.concatenate([y for _, y in train]), x_test, y_test, 10, CIFAR10_CLASSES)
