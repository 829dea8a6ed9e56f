"""CUDA GEMM benchmark: SONIQ's kernels against cuBLAS FP16 and INT8, side by side.

For each GEMM shape (M, K, N) and precision configuration it times, on the current
GPU and in one process:
  ours/tensor-core  -- the backend's split: rows with few plane pairs on mma.sync b1
                       (sm_80+), the rest on dp4a (soniq_fast/cuda/launch/engines.py)
  ours/cuda-core    -- the split without tensor cores: CUDA-core popcount + dp4a
  cuBLAS FP16       -- cupy.matmul on float16 (tensor cores)
  cuBLAS INT8       -- torch._int_mm when PyTorch is installed, else cublasGemmEx s8 x s8 -> s32
and prints throughput (tera-ops, 2 M K N per GEMM) and ratios as a markdown table.
Our timings include activation packing and row sums: everything linear_int does on
the device. Each of our results is checked against the reference once.

Usage:  python benchmarks/cuda_gemm.py [--json out.json] [--min-time 0.2]
Needs CuPy and an NVIDIA GPU; without one it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

SHAPES = [(256, 1024, 1024), (1024, 1024, 1024), (3136, 576, 64), (64, 4096, 4096)]


def configs(k: int, n: int, rng):
    """name -> (a_bits [K], act_bits_hi, w_bits [N]), as in benchmarks/gemm.py.

    mixed: 75% of the output channels at 1 bit and 25% at 4; input channels half at
    2 bits and half at 8 (A = 8).
    """
    return {
        "W1A1": (np.ones(k, np.uint8), 1, np.ones(n, np.uint8)),
        "W2A2": (np.full(k, 2, np.uint8), 2, np.full(n, 2, np.uint8)),
        "mixed": (np.where(rng.random(k) < 0.5, 2, 8).astype(np.uint8), 8,
                  np.where(rng.random(n) < 0.75, 1, 4).astype(np.uint8)),
    }


def need_gpu():
    """CuPy with a usable device, or exit with status 2 saying what is missing."""
    try:
        import cupy
        available = cupy.is_available()
    except ImportError:
        cupy, available = None, False
    if not available:
        what = "CuPy is not installed" if cupy is None else "CuPy sees no CUDA device"
        print(f"cuda_gemm: no GPU available ({what}); this benchmark needs an NVIDIA GPU and "
              f"CuPy (pip install cupy-cuda12x). Nothing was measured.", file=sys.stderr)
        sys.exit(2)
    return cupy


def time_gpu(cp, fn, min_time: float) -> float:
    """Median seconds per call of ``fn`` (CUDA events), after warm-up."""
    for _ in range(3):
        fn()
    cp.cuda.Device().synchronize()
    times, total = [], 0.0
    while total < min_time or len(times) < 5:
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
        total += times[-1]
    return float(np.median(times))


def int8_baseline(cp, m, k, n):
    """A callable running an s8 x s8 -> s32 cuBLAS GEMM of this shape, or (None, why)."""
    try:
        import torch
        if torch.cuda.is_available():
            a = torch.randint(-128, 127, (m, k), dtype=torch.int8, device="cuda")
            b = torch.randint(-128, 127, (k, n), dtype=torch.int8, device="cuda")
            return (lambda: torch._int_mm(a, b)), "torch._int_mm"
    except Exception:   # no torch, or torch without CUDA: fall back to CuPy's cuBLAS binding
        pass
    try:
        from cupy_backends.cuda.libs import cublas
        a = cp.asarray(np.random.default_rng(0).integers(-128, 127, (m, k)), dtype=cp.int8)
        b = cp.asarray(np.random.default_rng(1).integers(-128, 127, (k, n)), dtype=cp.int8)
        c = cp.empty((m, n), cp.int32)
        one, zero = np.ones(1, np.int32), np.zeros(1, np.int32)
        handle = cp.cuda.device.get_cublas_handle()
        # row-major C = A B is column-major C^T = B^T A^T
        gemm = lambda: cublas.gemmEx(handle, 0, 0, n, m, k, one.ctypes.data, b.data.ptr, 3, n,
                                     a.data.ptr, 3, k, zero.ctypes.data, c.data.ptr, 10, n,
                                     72, -1)
        gemm()
        return gemm, "cublasGemmEx"
    except Exception as exc:
        return None, f"unavailable ({exc})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds of timed calls per measurement")
    args = parser.parse_args()
    cp = need_gpu()

    import soniq_ref
    from soniq_fast.cuda.backend import CudaBackend
    from soniq_fast.cuda.launch.gemm import integer_gemm
    from soniq_fast.cuda.launch.geometry import linear_geometry
    from soniq_fast.cuda.runtime.gpu import GpuRuntime

    rt = GpuRuntime()
    backend = CudaBackend(rt, "cuda")
    gpu_name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        a16 = cp.asarray(rng.standard_normal((m, k)), dtype=cp.float16)
        b16 = cp.asarray(rng.standard_normal((k, n)), dtype=cp.float16)
        fp16 = time_gpu(cp, lambda: cp.matmul(a16, b16), args.min_time)
        int8_fn, int8_how = int8_baseline(cp, m, k, n)
        int8 = time_gpu(cp, int8_fn, args.min_time) if int8_fn else None
        for name, (a_bits, hi, w_bits) in configs(k, n, rng).items():
            a = (rng.random((m, k)) * (1 << a_bits.astype(np.int64))).astype(np.uint8)
            w = (rng.random((n, k)) * (1 << w_bits[:, None].astype(np.int64))).astype(np.uint8)
            packed = backend.pack_weights(w, w_bits)
            x = rt.to_device(a)
            shift = rt.to_device((hi - a_bits).astype(np.uint8))
            want = soniq_ref.linear_int(a, a_bits, w, w_bits, hi)
            for engine, label in (("auto", "tensor-core"), ("cuda-core", "cuda-core")):
                run = (lambda e=engine: integer_gemm(rt, e, x, shift, linear_geometry(k), m, hi,
                                                     packed, 1))
                got = rt.to_host(run()).reshape(m, n)
                ours = time_gpu(cp, run, args.min_time)
                if not np.array_equal(got, want):
                    sys.exit(f"cuda_gemm: WRONG RESULT for {name} {label} at {(m, k, n)}")
                ops = 2.0 * m * k * n
                rows.append(dict(shape=[m, k, n], config=name, engine=label, seconds=ours,
                                 tops=ops / ours / 1e12, fp16_seconds=fp16,
                                 int8_seconds=int8, int8_baseline=int8_how,
                                 vs_fp16=fp16 / ours, vs_int8=(int8 / ours) if int8 else None))
    print(f"GPU: {gpu_name}; command: python benchmarks/cuda_gemm.py\n")
    print("| M, K, N | config | ours | TOPS | x cuBLAS FP16 | x cuBLAS INT8 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        vs_int8 = f"{r['vs_int8']:.2f}" if r["vs_int8"] else "n/a"
        print(f"| {tuple(r['shape'])} | {r['config']} | {r['engine']} | {r['tops']:.1f} | "
              f"{r['vs_fp16']:.2f} | {vs_int8} |")
    print("\ncuBLAS INT8 through: " + "; ".join(sorted({r["int8_baseline"] for r in rows})))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(dict(gpu=gpu_name, rows=rows), f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
