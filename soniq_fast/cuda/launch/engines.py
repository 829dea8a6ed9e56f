"""Which engine computes which weight rows.

The palette makes a layer's rows fall in two groups. A row whose bit-serial cost
``bw * A`` (plane pairs) is at most ``BINARY_MAX_PLANE_PAIRS`` runs on a binary
engine -- the tensor-core b1 mma on sm_80+, else the CUDA-core popcount kernel;
every other row runs on the dp4a byte engine, whose cost does not grow with bits.
``cuda-core`` is ``auto`` without tensor cores (binary rows on the popcount kernel).
An engine may also be forced for all rows (tests use this to cover each engine).
"""

from __future__ import annotations

import numpy as np

ENGINES = ("auto", "cuda-core", "bitserial", "mma", "int8")
BINARY_MAX_PLANE_PAIRS = 4


def split_rows(bits: np.ndarray, act_bits_hi: int, engine: str, compute_capability: int):
    """{kernel name: int32 row indices} for a layer with weight bits ``bits`` [N]."""
    rows = np.arange(bits.shape[0], dtype=np.int32)
    if engine == "bitserial":
        return {"bitserial_gemm": rows}
    if engine == "mma":
        return {"mma_gemm": rows}
    if engine == "int8":
        return {"int8_gemm": rows}
    binary = bits.astype(np.int64) * act_bits_hi <= BINARY_MAX_PLANE_PAIRS
    tensor_cores = engine == "auto" and compute_capability >= 80
    binary_kernel = "mma_gemm" if tensor_cores else "bitserial_gemm"
    groups = {binary_kernel: rows[binary], "int8_gemm": rows[~binary]}
    return {name: r for name, r in groups.items() if r.size}
