"""MNIST, Fashion-MNIST (or any dataset in the same layout) from a folder of IDX files.

Expected files, each optionally gzip-compressed (``name.gz``)::

    train-images-idx3-ubyte  train-labels-idx1-ubyte
    t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

IDX: a big-endian header -- two zero bytes, a type byte (0x08 = uint8), the
number of dimensions, then one uint32 size per dimension -- followed by the data.
The official train/test split is used.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from .dataset import Dataset, DatasetError

FILES = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
         "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / (stem + ".gz")):
        if candidate.is_file():
            return candidate
    raise DatasetError(f"MNIST folder {folder} is missing {stem} (or {stem}.gz)")


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file of unsigned bytes into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DatasetError(f"cannot read IDX file {path.name}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path.name} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise DatasetError(f"{path.name} holds IDX type 0x{raw[2]:02x}; only unsigned bytes "
                           f"(0x08) are supported")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{path.name} has a truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) - header != int(np.prod(dims, dtype=np.int64)):
        raise DatasetError(f"{path.name} declares shape {dims} but holds "
                           f"{len(raw) - header} bytes of data")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _pair(folder, images, labels, split):
    x, y = read_idx(_find(folder, images)), read_idx(_find(folder, labels))
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DatasetError(f"MNIST {split} images {x.shape} and labels {y.shape} do not match "
                           f"(expected [N, H, W] and [N])")
    if y.size and y.max() > 9:
        raise DatasetError(f"MNIST {split} labels must be 0..9, found {int(y.max())}")
    return x[:, None, :, :].copy(), y.astype(np.int64)


def load_mnist(data_dir, name: str = "mnist", class_names: tuple[str, ...] = ()) -> Dataset:
    """The four IDX files of ``data_dir`` as a Dataset called ``name``."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DatasetError(f"MNIST folder {folder} does not exist")
    x_train, y_train = _pair(folder, FILES["x_train"], FILES["y_train"], "train")
    x_test, y_test = _pair(folder, FILES["x_test"], FILES["y_test"], "test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DatasetError(f"MNIST train images {x_train.shape[1:]} and test images "
                           f"{x_test.shape[1:]} differ in size")
    return Dataset(name, x_train, y_train, x_test, y_test, 10, tuple(class_names))
