"""Checked reads of a ``.soniq`` manifest's fields and tensors.

Every reader raises :class:`~soniq_ref.container.SoniqFileError` with a one-line
message naming the field or tensor; nothing is trusted before it is checked.
:class:`StageEntry` is what a stage type's ``from_file`` reads its stage from.
"""

from __future__ import annotations

import numpy as np

from .checks import MAX_GEOMETRY
from .container import DTYPES, fail


def int_field(entry: dict, key: str, where: str, least: int = 0,
              most: int = MAX_GEOMETRY) -> int:
    value = entry.get(key)
    if type(value) is not int or not least <= value <= most:
        fail(f"{where}: '{key}' must be an integer in {least}..{most}, got {value!r}"[:300])
    return value


def int_list(value, where: str, least: int = 1, length=None) -> list[int]:
    if not isinstance(value, list) or (length is not None and len(value) not in length) or \
            not all(type(v) is int and least <= v <= MAX_GEOMETRY for v in value):
        fail((f"{where} must be a list of integers in {least}..{MAX_GEOMETRY}"
              + (f" of length {' or '.join(map(str, length))}" if length else "")
              + f", got {value!r}")[:300])
    return value


def palette(value, where: str) -> tuple[int, int]:
    lo, hi = int_list(value, where, least=1, length=(2,))
    if not lo <= hi <= 8:
        fail(f"{where} must satisfy 1 <= lo <= hi <= 8, got {value!r}")
    return lo, hi


def float32_field(entry: dict, key: str, where: str) -> np.float32:
    """A JSON number that is exactly a finite float32 > 0 (as the writer writes it)."""
    value = entry.get(key)
    if type(value) is not float or not np.isfinite(value) or value <= 0 or \
            float(np.float32(value)) != value:
        fail(f"{where}: '{key}' must be a finite float32 number > 0, got {value!r}"[:300])
    return np.float32(value)


def exact_keys(entry: dict, allowed: set, where: str, optional: set = frozenset()) -> None:
    """``entry`` has exactly the keys ``allowed`` (plus any of ``optional``)."""
    missing, extra = allowed - set(entry), set(entry) - allowed - optional
    if missing or extra:
        fail(f"{where}: " + "; ".join(
            part for part in (f"missing {', '.join(sorted(missing))}" if missing else "",
                              f"keys the format does not define: {', '.join(sorted(extra))}"
                              if extra else "") if part)[:300])


def tensor(tensors: dict, name: str, dtype_name: str, shape) -> np.ndarray:
    """Tensor ``name`` of ``tensors``, checked to be ``dtype_name`` of ``shape``."""
    if name not in tensors:
        fail(f"missing tensor {name!r}")
    arr = tensors[name]
    if arr.dtype != DTYPES[dtype_name] or arr.shape != tuple(shape):
        fail(f"tensor {name!r} must be {dtype_name} {list(shape)}, got "
             f"{arr.dtype} {list(arr.shape)}")
    return arr.astype(arr.dtype.newbyteorder("="))


class StageEntry:
    """Stage ``index`` of a manifest, as its type's ``from_file`` reads it.

    ``fields``: the manifest's stage object (its keys already checked against the
    type's); ``tensors``: name -> array of the whole file; ``shape``: the per-sample
    input shape the previous stages give (Python ints); ``last``: whether it is the
    last stage. Tensor and field names are prefixed and messages located for it.
    """

    def __init__(self, index: int, fields: dict, tensors: dict, shape: tuple, last: bool):
        self.index, self.fields, self.tensors = index, fields, tensors
        self.shape, self.last = shape, last
        self.type = fields["type"]
        self.where = f"stage {index} ({self.type})"

    def name(self, tensor_name: str) -> str:
        return f"{self.index}.{tensor_name}"

    def int(self, key: str, least: int = 0, most: int = MAX_GEOMETRY) -> int:
        return int_field(self.fields, key, self.where, least, most)

    def int_list(self, key: str, least: int = 1, length=None) -> list[int]:
        return int_list(self.fields[key], f"{self.where} {key}", least, length)

    def palette(self, key: str) -> tuple[int, int]:
        return palette(self.fields[key], f"{self.where} {key}")

    def float32(self, key: str) -> np.float32:
        return float32_field(self.fields, key, self.where)

    def tensor(self, tensor_name: str, dtype_name: str, shape) -> np.ndarray:
        return tensor(self.tensors, self.name(tensor_name), dtype_name, shape)

    def fail(self, message: str):
        fail(f"{self.where}: {message}")
