"""Peak rates of the warp-level matrix instructions (mma.sync) on the current GPU.

The b1 GEMM engine is built on ``mma.sync m16n8k256 .b1 .and.popc``; whether it can
beat FP16 depends on that instruction's rate on the chip, which the vendor's tables
do not list for every architecture. This probe measures it directly, beside the same
instruction family's s8 and f16 rates and cuBLAS FP16 (which may use other
instructions, e.g. Hopper's wgmma): every warp runs 8 independent accumulation chains
of one instruction from registers, many warps per SM, timed with CUDA events.

Rates are in tera-ops per second, 2 ops per multiply-accumulate (for b1, one AND +
popcount step of one bit pair counts as one multiply-accumulate).

Usage:  python benchmarks/cuda_mma_peak.py [--json out.json]
Needs CuPy and an NVIDIA GPU of sm_80 or newer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_gemm import need_gpu, time_gpu  # noqa: E402

SOURCE = r"""
typedef unsigned int u32;
#define CHAINS 8
#define PROBE(NAME, PTX, CT, CC)                                                          \
extern "C" __global__ void NAME(const u32* seed, int iters, float* out) {                 \
    const int lane = threadIdx.x & 31;                                                     \
    const u32 a0 = seed[lane], a1 = seed[lane + 32], a2 = seed[lane + 64],                 \
              a3 = seed[lane + 96], b0 = seed[lane + 128], b1 = seed[lane + 160];          \
    CT d[CHAINS][4];                                                                       \
    for (int s = 0; s < CHAINS; ++s)                                                       \
        for (int r = 0; r < 4; ++r) d[s][r] = 0;                                           \
    for (int it = 0; it < iters; ++it) {                                                   \
        _Pragma("unroll")                                                                  \
        for (int s = 0; s < CHAINS; ++s)                                                   \
            asm volatile(PTX " {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"      \
                         : "+" CC(d[s][0]), "+" CC(d[s][1]), "+" CC(d[s][2]), "+" CC(d[s][3]) \
                         : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));          \
    }                                                                                      \
    float sum = 0;                                                                         \
    for (int s = 0; s < CHAINS; ++s)                                                       \
        for (int r = 0; r < 4; ++r) sum += (float)d[s][r];                                 \
    out[blockIdx.x * blockDim.x + threadIdx.x] = sum;                                      \
}
#define R "r"
#define F "f"
PROBE(b1_peak, "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc", int, R)
PROBE(s8_peak, "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32", int, R)
PROBE(f16_peak, "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", float, F)
"""

# name -> multiply-accumulates per instruction (m * n * k)
PROBES = {"b1_peak": 16 * 8 * 256, "s8_peak": 16 * 8 * 32, "f16_peak": 16 * 8 * 16}
WARPS_PER_BLOCK, BLOCKS_PER_SM, ITERS, CHAINS = 4, 8, 1024, 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    cp = need_gpu()
    props = cp.cuda.runtime.getDeviceProperties(0)
    sms, name = props["multiProcessorCount"], props["name"].decode()
    module = cp.RawModule(code=SOURCE, options=("--std=c++14",))
    seed = cp.asarray(np.random.default_rng(0).integers(0, 2 ** 32, 192, dtype=np.uint32))
    blocks = sms * BLOCKS_PER_SM
    out = cp.empty(blocks * 32 * WARPS_PER_BLOCK, cp.float32)
    rates = {}
    for probe, macs in PROBES.items():
        fn = module.get_function(probe)
        run = lambda: fn((blocks,), (32 * WARPS_PER_BLOCK,), (seed, np.int32(ITERS), out))
        seconds = time_gpu(cp, run, 0.2)
        instructions = blocks * WARPS_PER_BLOCK * ITERS * CHAINS
        rates[probe] = 2.0 * macs * instructions / seconds / 1e12
    a = cp.random.standard_normal((8192, 8192), dtype=cp.float32).astype(cp.float16)
    fp16 = time_gpu(cp, lambda: cp.matmul(a, a), 0.2)
    rates["cublas_fp16_8192"] = 2.0 * 8192 ** 3 / fp16 / 1e12
    print(f"GPU: {name} ({sms} SMs); command: python benchmarks/cuda_mma_peak.py\n")
    print("| instruction | tera-ops/s |")
    print("|---|---|")
    for key, value in rates.items():
        print(f"| {key} | {value:.0f} |")
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(dict(gpu=name, sms=sms, tops=rates), f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
