"""Bit planes and bit packing.

A ``b``-bit code ``k = sum_j 2**j * t_j`` splits into ``b`` bit planes ``t_j``.
For weights the plane ``t_j`` stands for the +-1 plane ``2 t_j - 1``, because
``q = 2k - n = sum_j 2**j (2 t_j - 1)``. For activations the planes are those of
the shifted code ``k << (A - b)`` on the layer's A-bit grid, so plane ``i`` of a
low-precision channel is simply zero for ``i < A - b``.

Packing lays a plane along K into little-endian uint64 words: element ``k`` of
the plane is bit ``k % 64`` of word ``k // 64``. The tail of the last word is
always zero, which is what makes ``popcount(W & A)`` correct for any K.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import checks
from .quantizers import shifted_codes

WORD_BITS = 64


def words_for(k: int) -> int:
    """Number of uint64 words that hold ``k`` bits."""
    return (k + WORD_BITS - 1) // WORD_BITS


def code_planes(codes: np.ndarray, n_planes: int) -> np.ndarray:
    """uint8 {0, 1} [..., n_planes, K]: plane j is bit j of each code (codes [..., K]).

    Codes wider than 8 bits (shifted activation codes are at most 255) are not expected.
    """
    planes = np.empty(codes.shape[:-1] + (n_planes, codes.shape[-1]), np.uint8)
    codes = codes.astype(np.uint8, copy=False)
    for j in range(n_planes):
        np.bitwise_and(codes >> np.uint8(j), np.uint8(1), out=planes[..., j, :])
    return planes


def pack_bits(plane: np.ndarray) -> np.ndarray:
    """{0, 1} array [..., K] -> uint64 [..., words_for(K)], LSB first, zero tail."""
    k = plane.shape[-1]
    padded = np.zeros(plane.shape[:-1] + (words_for(k) * WORD_BITS,), dtype=np.uint8)
    padded[..., :k] = plane
    packed = np.packbits(padded, axis=-1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").astype(np.uint64)


def unpack_bits(words: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: uint64 [..., W] -> uint8 {0, 1} [..., k]."""
    as_bytes = np.ascontiguousarray(words.astype("<u8")).view(np.uint8)
    return np.unpackbits(as_bytes, axis=-1, bitorder="little")[..., :k]


# ------------------------------------------------------------------------------ weights

@dataclass(frozen=True)
class PackedWeights:
    """Weights packed once for the bit-serial core (the reference backend's format).

    planes: uint64 [N, 8, words_for(K)] -- plane j of every output channel's codes;
            planes j >= bits[o] are zero.
    bits:   uint8 [N] -- weight bit width per output channel.
    shape:  the shape of the original code array ([N, K] or [O, C, kh, kw]).

    Validated on construction (``ValueError``/``TypeError`` naming the field) and
    immutable: the arrays are read-only copies, so neither the caller's arrays nor
    the object's can change what the kernels see.
    """

    planes: np.ndarray
    bits: np.ndarray
    shape: tuple

    def __post_init__(self):
        planes, bits, shape = self._validated()
        object.__setattr__(self, "planes", checks.frozen(planes))
        object.__setattr__(self, "bits", checks.frozen(bits))
        object.__setattr__(self, "shape", shape)

    def check(self) -> "PackedWeights":
        """Validate again (before every kernel): a packed object forced to change after
        construction is refused, never computed with."""
        self._validated()
        return self

    def _validated(self) -> tuple:
        shape = checks.check_weight_shape("shape", self.shape)
        bits = checks.check_bits("bits", self.bits, shape[0])
        planes = checks.as_array("planes", self.planes, np.uint64, ndim=3)
        k = int(np.prod(shape[1:], dtype=object))
        if planes.shape != (shape[0], 8, words_for(k)):
            raise ValueError(f"planes must have shape {[shape[0], 8, words_for(k)]} for "
                             f"shape {list(shape)}, got {list(planes.shape)}")
        if np.any(planes[np.arange(8)[None, :] >= bits[:, None]]):
            raise ValueError("planes has bits set in a plane at or above its row's bits")
        if k % WORD_BITS and planes.size and np.any(planes[..., -1] >> np.uint64(k % WORD_BITS)):
            raise ValueError(f"planes has bits set beyond K = {k}")
        return planes, bits, shape

    @property
    def k(self) -> int:
        return int(np.prod(self.shape[1:]))

    def codes(self) -> np.ndarray:
        """Unpack back to the uint8 code array of the original shape."""
        codes = np.zeros((self.shape[0], self.k), np.uint8)
        for j in range(8):
            codes |= unpack_bits(self.planes[:, j], self.k) << np.uint8(j)
        return codes.reshape(self.shape)


def check_weights(w_codes, w_bits) -> tuple[np.ndarray, np.ndarray]:
    """Validate weight codes (uint8 [N, ...]) and their per-row bit widths (uint8 [N])."""
    w_codes = checks.as_array("w_codes", w_codes, np.uint8)
    if w_codes.ndim not in (2, 4):
        raise ValueError(f"w_codes must be [N, K] or [O, C, kh, kw], got shape {w_codes.shape}")
    w_bits = checks.check_bits("w_bits", w_bits, w_codes.shape[0])
    checks.check_codes("w_codes", w_codes, w_bits, axis=0)
    return w_codes, w_bits


def pack_weights(w_codes, w_bits) -> PackedWeights:
    """Pack weight codes ([N, K] or [O, C, kh, kw], uint8) with bits uint8 [N]."""
    return packed_weights(*check_weights(w_codes, w_bits))


def packed_weights(w_codes: np.ndarray, w_bits: np.ndarray) -> PackedWeights:
    """:func:`pack_weights` of validated codes and bits (the reference backend's kernel)."""
    flat = checks.rows(w_codes)
    planes = code_planes(flat, 8)
    return PackedWeights(pack_bits(planes), w_bits, tuple(w_codes.shape))


def check_stored_bits(w_bits, stored: np.ndarray) -> None:
    """``w_bits`` given beside a packed object must equal the bits stored in it."""
    w_bits = checks.check_bits("w_bits", w_bits, stored.shape[0])
    if not np.array_equal(w_bits, stored):
        raise ValueError("w_bits disagrees with the bits stored in the packed weights")


def unpack_weights(w_codes, w_bits, name: str = "w_codes") -> tuple[np.ndarray, np.ndarray]:
    """Accept codes + bits or a :class:`PackedWeights`; return validated (codes, bits)."""
    if isinstance(w_codes, PackedWeights):
        w_codes.check()
        if w_bits is not None:
            check_stored_bits(w_bits, w_codes.bits)
        return w_codes.codes(), w_codes.bits
    if w_bits is None:
        raise TypeError("w_bits is required unless w_codes is a PackedWeights")
    return check_weights(w_codes, w_bits)


# -------------------------------------------------------------------------- activations

def pack_activations(a_codes, a_bits, act_bits_hi: int) -> np.ndarray:
    """Activation codes uint8 [M, K] -> packed planes uint64 [M, A, words_for(K)].

    Plane ``i`` holds bit ``i`` of ``a_codes[m, c] << (A - a_bits[c])``.
    """
    return activation_planes(*checks.check_act_codes(a_codes, a_bits, act_bits_hi))


def activation_planes(a_codes, a_bits, act_bits_hi: int) -> np.ndarray:
    """:func:`pack_activations` of validated arguments (the reference backend's kernel)."""
    shifted = shifted_codes(a_codes, a_bits, act_bits_hi)
    return pack_bits(code_planes(shifted, act_bits_hi))
