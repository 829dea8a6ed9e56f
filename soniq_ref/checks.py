"""Argument validation shared by every public function of the backend contract.

Every check raises ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong
shape, range or value) with a message that names the offending argument, and
runs before any arithmetic, so a bad call never produces a partial result.
Every backend runs these same checks (through :class:`soniq_ref.contract.CheckedBackend`),
so all backends refuse the same inputs with the same messages.
"""

from __future__ import annotations

import numpy as np

MIN_BITS = 1
MAX_BITS = 8
# Largest stride, padding, kernel size and per-sample element count any backend runs (the
# compiled kernels take 32-bit geometry); larger values are refused everywhere.
MAX_GEOMETRY = 2 ** 31 - 1


def as_array(name: str, value, dtype, ndim: int | None = None) -> np.ndarray:
    """Return ``value`` as a C-contiguous NumPy array of exactly ``dtype``.

    Integer arrays are never silently converted between dtypes: an int64 array
    where uint8 codes are expected is a ``TypeError``, because a silent cast could
    wrap values. Non-contiguous and read-only arrays are accepted (copied when
    needed, never written to).
    """
    if hasattr(value, "get") and not isinstance(value, np.ndarray):  # CuPy array
        value = value.get()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of dtype {np.dtype(dtype).name}, "
                        f"got {type(value).__name__}")
    if value.dtype != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype).name}, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {value.shape}")
    return np.ascontiguousarray(value)


def check_bits_value(name: str, bits) -> int:
    """A single bit width: a Python or NumPy integer in 1..8."""
    if isinstance(bits, (bool, np.bool_)) or not isinstance(bits, (int, np.integer)):
        raise TypeError(f"{name} must be an integer bit width in 1..8, got {bits!r}")
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise ValueError(f"{name} must be in 1..8, got {int(bits)}")
    return int(bits)


def check_bits(name: str, bits, length: int, hi: int = MAX_BITS) -> np.ndarray:
    """Per-channel bit widths: uint8 array of shape [length], every entry in 1..hi."""
    bits = as_array(name, bits, np.uint8, ndim=1)
    if bits.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {bits.shape[0]}")
    if bits.size and (bits.min() < MIN_BITS or bits.max() > hi):
        bad = bits[(bits < MIN_BITS) | (bits > hi)][0]
        raise ValueError(f"{name} entries must be in 1..{hi}, found {int(bad)}")
    return bits


def check_codes(name: str, codes: np.ndarray, bits: np.ndarray, axis: int) -> None:
    """Every code along ``axis`` channel ``c`` must be <= 2**bits[c] - 1."""
    if codes.size == 0:
        return
    if bits.min() == bits.max() and int(codes.max()) < 1 << int(bits[0]):
        return      # one width: a single reduction over everything says it
    limit = (1 << bits.astype(np.int64)) - 1
    # the largest code of each channel, reduced in place over the other axes (no copy)
    others = tuple(i for i in range(codes.ndim) if i != axis)
    peak = codes.max(axis=others).astype(np.int64)
    over = peak > limit
    if over.any():
        c = int(np.flatnonzero(over)[0])
        raise ValueError(f"{name} has a code above 2**bits - 1 = {int(limit[c])} "
                         f"in channel {c} (max {int(peak[c])})")


def check_act_codes(a_codes, a_bits, act_bits_hi, ndim: int = 2, name: str = "a_codes"):
    """Activation codes (uint8, ``ndim``-D, channels on axis 1), their bits (uint8 [C],
    each in 1..act_bits_hi) and A itself -> validated (codes, bits, A)."""
    act_bits_hi = check_bits_value("act_bits_hi", act_bits_hi)
    a_codes = as_array(name, a_codes, np.uint8, ndim=ndim)
    a_bits = check_bits("a_bits", a_bits, a_codes.shape[1], hi=act_bits_hi)
    check_codes(name, a_codes, a_bits, axis=1)
    return a_codes, a_bits, act_bits_hi


def check_finite(name: str, values: np.ndarray) -> None:
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} contains NaN or Inf")


def check_float32(name: str, value, length: int) -> np.ndarray:
    """A finite float32 vector of shape [length]."""
    arr = as_array(name, value, np.float32, ndim=1)
    if arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    check_finite(name, arr)
    return arr


def check_nonneg_int(name: str, value, minimum: int, maximum: int = MAX_GEOMETRY) -> int:
    """An integer in ``minimum..maximum`` (a Python or NumPy integer, not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not minimum <= int(value) <= maximum:
        raise ValueError(f"{name} must be in {minimum}..{maximum}, got {int(value)}")
    return int(value)


def frozen(value: np.ndarray) -> np.ndarray:
    """A read-only C-contiguous copy of ``value`` that cannot be made writeable again (a
    view of a read-only base): what a packed object keeps, so that editing the caller's
    array, or the packed object's, never changes what the kernels see."""
    base = np.array(value, copy=True, order="C")
    base.setflags(write=False)
    return base.view()


def check_weight_shape(name: str, shape) -> tuple:
    """The code shape a packed object records: [N, K] or [O, C, kh, kw], integers >= 0."""
    if not isinstance(shape, tuple) or len(shape) not in (2, 4) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) and v >= 0
            for v in shape):
        raise ValueError(f"{name} must be a tuple (N, K) or (O, C, kh, kw) of integers >= 0, "
                         f"got {shape!r}"[:300])
    return tuple(int(v) for v in shape)


def rows(values: np.ndarray) -> np.ndarray:
    """``values`` [N, ...] viewed as [N, prod(...)], also when N or a dimension is 0."""
    return values.reshape(values.shape[0], int(np.prod(values.shape[1:], dtype=np.int64)))
