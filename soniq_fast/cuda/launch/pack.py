"""Bit-plane packing and row sums on the device."""

from __future__ import annotations

import numpy as np

from soniq_ref import checks
from soniq_ref.bitpack import words_for

from ..packed import CudaPackedWeights
from .geometry import linear_geometry

BLOCK = 128


def _blocks(items: int) -> int:
    return max(1, (items + BLOCK - 1) // BLOCK)


def pack_planes(rt, x, shift, geometry, m: int, k: int, planes: int):
    """u64 [m, planes, words_for(k)]: plane i, bit t of word w = bit i of code(row, 64 w + t).

    x: u8 codes (an [M, K] matrix, or a [B, C, H, W] image with a conv geometry);
    shift: u8 [C], per-channel left shift (A - a_bits; zeros for weights).
    """
    words = words_for(k)
    out = rt.empty((m, planes, words), np.uint64)
    rt.function("pack_planes")((_blocks(m * words),), (BLOCK,),
                               (x, shift, rt.constant(geometry), np.int32(m), np.int32(k),
                                np.int32(planes), np.int32(words), out))
    return out


def plane_row_sums(rt, planes, m: int, n_planes: int, words: int):
    """i64 [m]: sum over K of the shifted codes, from their planes."""
    out = rt.empty((m,), np.int64)
    rt.function("plane_row_sums")((_blocks(m),), (BLOCK,),
                                  (planes, np.int32(m), np.int32(n_planes), np.int32(words), out))
    return out


def pack_weight_codes(rt, codes: np.ndarray, bits: np.ndarray) -> CudaPackedWeights:
    """Validated u8 codes [N, ...] and bits [N] -> CudaPackedWeights on ``rt``."""
    flat = np.array(checks.rows(codes), order="C")   # a snapshot, never aliased
    n, k = flat.shape
    device_codes = rt.to_device(flat)
    zero_shift = rt.to_device(np.zeros(k, np.uint8))
    planes = pack_planes(rt, device_codes, zero_shift, linear_geometry(k), n, k, 8)
    return CudaPackedWeights(planes, device_codes, bits.copy(), rt.to_device(bits),
                             tuple(codes.shape))
