"""Which engine computes which weight rows.

The palette makes a layer's rows fall in two groups. A bit-serial engine costs one
AND + popcount pass per pair of weight and activation bit planes (``bw * A`` pairs
for a row); the dp4a byte engine costs the same at any bit width. So a row runs
bit-serially when its plane pairs are few enough, otherwise on dp4a:

- with tensor cores (sm_80+, ``mma.sync`` b1), whose binary rate is far above the
  dp4a byte-MAC rate, up to ``TENSOR_CORE_MAX_PLANE_PAIRS`` pairs;
- on CUDA cores (``__popcll``), up to ``CUDA_CORE_MAX_PLANE_PAIRS`` pairs, around
  where 64-bit popcounts and dp4a break even.

Both limits come from peak instruction rates, not yet from measurements on a GPU
(benchmarks/cuda_gemm.py is the tool to tune them). ``cuda-core`` is ``auto``
without tensor cores; ``bitserial``, ``mma`` and ``int8`` put every row on one
engine (tests use them to cover each engine).
"""

from __future__ import annotations

import numpy as np

ENGINES = ("auto", "cuda-core", "bitserial", "mma", "int8")
TENSOR_CORE_MAX_PLANE_PAIRS = 16
CUDA_CORE_MAX_PLANE_PAIRS = 4


def split_rows(bits: np.ndarray, act_bits_hi: int, engine: str, compute_capability: int):
    """{kernel name: int32 row indices} for a layer with weight bits ``bits`` [N]."""
    rows = np.arange(bits.shape[0], dtype=np.int32)
    if engine == "bitserial":
        return {"bitserial_gemm": rows}
    if engine == "mma":
        return {"mma_gemm": rows}
    if engine == "int8":
        return {"int8_gemm": rows}
    tensor_cores = engine == "auto" and compute_capability >= 80
    limit = TENSOR_CORE_MAX_PLANE_PAIRS if tensor_cores else CUDA_CORE_MAX_PLANE_PAIRS
    binary = bits.astype(np.int64) * act_bits_hi <= limit
    binary_kernel = "mma_gemm" if tensor_cores else "bitserial_gemm"
    groups = {binary_kernel: rows[binary], "int8_gemm": rows[~binary]}
    return {name: r for name, r in groups.items() if r.size}
