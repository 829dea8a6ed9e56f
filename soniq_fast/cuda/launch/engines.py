"""Which engine computes which weight rows, and in which order.

The palette makes a layer's rows fall in two groups. A bit-serial engine costs one
AND + popcount pass per pair of weight and activation bit planes (``bw * A`` pairs
for a row); the dp4a byte engine costs the same at any bit width. So a row runs
bit-serially when its plane pairs are few enough, otherwise on dp4a:

- with tensor cores (sm_80+, ``mma.sync`` b1), up to ``TENSOR_CORE_MAX_PLANE_PAIRS``;
- on CUDA cores (``__popcll``), up to ``CUDA_CORE_MAX_PLANE_PAIRS``.

Rows go to their engine sorted by bit width (stably), so a block of columns holds
one width wherever it can: a b1 block runs as many weight planes as its widest
column, and an interleaved 1-bit / 4-bit layer would otherwise run every block at 4.

Both limits are measured on an NVIDIA H200 (sm_90; benchmarks/cuda_gemm.py,
docs/benchmarks.md), per GEMM at 8192^3 (4096^3 agrees):

- b1 mma by plane pairs: 1: 1.8 ms, 2: 2.7, 4: 3.5, 8: 7.6, 16: 5.5-8.5,
  32: 9.6-11.5, 64: 18.5 ms; dp4a: 21.8-22.0 ms at any width. The b1 engine wins
  up to 32 pairs (W4 x A8) by 1.8x and more. At 64 (W8 x A8) it wins at 4096^3 and
  8192^3 by 9-16 % but loses on every smaller shape timed, by 6-67 %, so the limit
  is 32.
- CUDA-core popcount: 1 pair 15.7 ms, 2: 25.0, 4: 41.4 against dp4a 21.9; the
  limit is 1. (At 64 x 4096 x 4096, where dp4a's 64-row tiles leave the GPU half
  idle, popcount wins up to 4 pairs; at 1024^3 and below every engine is bound by
  launch overhead, 0.05-0.12 ms a call.) GPUs without tensor cores, which are the
  ones this limit serves, have not been measured.

``cuda-core`` is ``auto`` without tensor cores; ``popcount`` (AND + ``__popcll`` on CUDA
cores, bitserial_gemm.cu; the same engine the cpu backend calls popcount), ``mma`` and
``int8`` put every row on one engine (tests use them to cover each engine). The former
name ``bitserial`` is still accepted for ``popcount``.
"""

from __future__ import annotations

import numpy as np

ENGINES = ("auto", "cuda-core", "popcount", "mma", "int8")
ENGINE_ALIASES = {"bitserial": "popcount"}     # earlier names, still accepted
TENSOR_CORE_MAX_PLANE_PAIRS = 32
CUDA_CORE_MAX_PLANE_PAIRS = 1


def split_rows(bits: np.ndarray, act_bits_hi: int, engine: str, compute_capability: int):
    """{kernel name: int32 row indices, sorted by bit width} for weight bits ``bits`` [N]."""
    rows = np.argsort(bits, kind="stable").astype(np.int32)
    if engine == "popcount":
        return {"bitserial_gemm": rows}
    if engine == "mma":
        return {"mma_gemm": rows}
    if engine == "int8":
        return {"int8_gemm": rows}
    tensor_cores = engine == "auto" and compute_capability >= 80
    limit = TENSOR_CORE_MAX_PLANE_PAIRS if tensor_cores else CUDA_CORE_MAX_PLANE_PAIRS
    binary = bits[rows].astype(np.int64) * act_bits_hi <= limit
    binary_kernel = "mma_gemm" if tensor_cores else "bitserial_gemm"
    groups = {binary_kernel: rows[binary], "int8_gemm": rows[~binary]}
    return {name: r for name, r in groups.items() if r.size}
