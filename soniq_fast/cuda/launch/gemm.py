"""The integer core on the device: linear_int and conv2d_int as one (implicit) GEMM.

Rows m of the GEMM are output pixels (b, oy, ox) -- for linear, just b -- and
columns are weight rows o; the result lands in [B, N, hw] order (hw = Ho * Wo,
1 for linear), which is NCHW for conv2d and [M, N] for linear.
"""

from __future__ import annotations

import numpy as np

from soniq_ref.bitpack import words_for

from ..packed import CudaPackedWeights
from .engines import split_rows
from .pack import pack_planes, plane_row_sums

# (rows per block, columns per block, threads per block) of each GEMM kernel
LAYOUT = {
    "int8_gemm": (64, 64, (16, 16)),         # int8_gemm.cu: 16 x 16 threads, 4 x 4 outputs each
    "bitserial_gemm": (32, 32, (16, 16)),    # bitserial_gemm.cu: 16 x 16 threads, 2 x 2 each
    "mma_gemm": (64, 64, (128,)),            # mma_gemm.cu: 4 warps x 16 rows, 8 x 8 columns
}


def _grid(kernel: str, m: int, n_rows: int) -> tuple[int, int]:
    rows_per_block, cols_per_block, _ = LAYOUT[kernel]
    return (max(1, -(-m // rows_per_block)), max(1, -(-n_rows // cols_per_block)))


def _row_groups(rt, engine: str, act_bits_hi: int, weights: CudaPackedWeights):
    """[(kernel, rows, rows on the device)], cached on the packed weights."""
    key = (act_bits_hi, engine, rt.compute_capability)
    if key not in weights.row_groups:
        groups = split_rows(weights.bits, act_bits_hi, engine, rt.compute_capability)
        weights.row_groups[key] = [(k, r, rt.to_device(r)) for k, r in groups.items()]
    return weights.row_groups[key]


def integer_gemm(rt, engine: str, x, shift, geometry, m: int, act_bits_hi: int,
                 weights: CudaPackedWeights, hw: int):
    """int64 [m // hw, N, hw] accumulators of codes x (u8, gathered by ``geometry``)."""
    n, k = weights.bits.shape[0], weights.k
    words = words_for(k)
    out = rt.empty((m // hw, n, hw), np.int64)
    planes = row_sums = None
    for kernel, rows, device_rows in _row_groups(rt, engine, act_bits_hi, weights):
        if kernel == "int8_gemm":
            rt.function(kernel)(_grid(kernel, m, rows.size), LAYOUT[kernel][2],
                                (x, shift, rt.constant(geometry), np.int32(m), np.int32(k),
                                 weights.codes, weights.bits_device, device_rows,
                                 np.int32(rows.size), np.int32(n), np.int32(hw), out))
            continue
        if planes is None:
            planes = pack_planes(rt, x, shift, geometry, m, k, act_bits_hi)
            row_sums = plane_row_sums(rt, planes, m, act_bits_hi, words)
        rt.function(kernel)(_grid(kernel, m, rows.size), LAYOUT[kernel][2],
                            (planes, row_sums, np.int32(m), np.int32(act_bits_hi),
                             weights.planes, weights.bits_device, device_rows,
                             np.int32(rows.size), np.int32(n), np.int32(words), np.int32(hw),
                             out))
    return out
