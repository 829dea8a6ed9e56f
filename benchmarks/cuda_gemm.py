"""CUDA GEMM benchmark: SONIQ's kernels against cuBLAS FP16 and INT8, side by side.

For each GEMM shape (M, K, N) and precision configuration (those of
benchmarks/gemm.py) it times, on the current GPU and in one process:
  split       -- the backend's default: rows with few plane pairs on the b1 tensor-core
                 engine (sm_80+), the rest on dp4a (soniq_fast/cuda/launch/engines.py)
  mma         -- every row on the b1 tensor-core engine (mma.sync m16n8k256 and.popc)
  popcount    -- every row on the CUDA-core engine (AND + __popcll per plane pair;
                 'bitserial', its former name, is accepted too)
  int8        -- every row on the dp4a byte engine
  cuBLAS FP16 -- the faster of torch.matmul and cupy.matmul on float16 (tensor cores)
  cuBLAS INT8 -- torch._int_mm (s8 x s8 -> s32) when PyTorch has CUDA, else cublasGemmEx
and prints throughput (tera-ops, 2 M K N per GEMM) and ratios = baseline time / our
time (> 1: ours is faster) as a markdown table. Our timings include activation
packing and row sums: everything linear_int does on the device. Every result is
checked once against the exact product, computed on the device in float64 (integer
values below 2**53, so every order of summation gives the exact sum).

Usage:  python benchmarks/cuda_gemm.py [--json out.json] [--min-time 0.2]
                                       [--shapes 0,1,4] [--configs W1A1,mixed]
                                       [--engines split,mma] [--define NAME=VALUE]
Needs CuPy and an NVIDIA GPU; without one it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gemm import CONFIGS, SHAPES as CPU_SHAPES, config_bits  # noqa: E402

SHAPES = CPU_SHAPES + [(4096, 4096, 4096), (8192, 8192, 8192)]
ENGINES = {"split": "auto", "mma": "mma", "popcount": "popcount", "int8": "int8"}
ENGINE_ALIASES = {"bitserial": "popcount"}
SLOW_CALL = 0.5   # seconds: a call this slow is timed three times, not for --min-time


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


def _event_seconds(cp, fn) -> float:
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    fn()
    stop.record()
    stop.synchronize()
    return cp.cuda.get_elapsed_time(start, stop) / 1e3


def time_gpu(cp, fn, min_time: float) -> float:
    """Median seconds per call of ``fn`` (CUDA events), after warm-up."""
    first = _event_seconds(cp, fn)            # compiles and warms up
    if first > SLOW_CALL:
        return float(np.median([_event_seconds(cp, fn) for _ in range(3)]))
    for _ in range(2):
        fn()
    times = []
    while sum(times) < min_time or len(times) < 5:
        times.append(_event_seconds(cp, fn))
    return float(np.median(times))


def fp16_baselines(cp, m, k, n, min_time):
    """{name: seconds} of float16 products of this shape on cuBLAS."""
    out = {}
    a16 = cp.random.standard_normal((m, k), dtype=cp.float32).astype(cp.float16)
    b16 = cp.random.standard_normal((k, n), dtype=cp.float32).astype(cp.float16)
    out["cupy.matmul"] = time_gpu(cp, lambda: cp.matmul(a16, b16), min_time)
    try:
        import torch
        if torch.cuda.is_available():
            ta = torch.randn(m, k, dtype=torch.float16, device="cuda")
            tb = torch.randn(k, n, dtype=torch.float16, device="cuda")
            out["torch.matmul"] = time_gpu(cp, lambda: torch.matmul(ta, tb), min_time)
    except ImportError:
        pass
    return out


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
        a = cp.random.randint(-128, 127, (m, k)).astype(cp.int8)
        b = cp.random.randint(-128, 127, (k, n)).astype(cp.int8)
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


def device_codes(cp, rows: int, bits: np.ndarray, axis: int, cols: int):
    """uint8 codes on the device, uniform in [0, 2**bits) per row (axis 0) or column (1)."""
    top = cp.asarray(1 << bits.astype(np.int64)).astype(cp.float32)
    top = top.reshape(1, -1) if axis == 1 else top.reshape(-1, 1)
    return cp.floor(cp.random.random((rows, cols), dtype=cp.float32) * top).astype(cp.uint8)


def exact_product(cp, a, a_bits, hi, w, w_bits):
    """float64 [M, N] = sum_c (2 w - (2^bw - 1)) * (a << (hi - a_bits)), exactly."""
    shifted = a.astype(cp.float64) * cp.asarray(2.0 ** (hi - a_bits.astype(np.int64)))
    levels = 2.0 * w.astype(cp.float64) - cp.asarray(2.0 ** w_bits.astype(np.int64) - 1)[:, None]
    return shifted @ levels.T


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--min-time", type=float, default=0.2,
                        help="seconds of timed calls per measurement (default 0.2)")
    parser.add_argument("--shapes", default=",".join(map(str, range(len(SHAPES)))),
                        help=f"indices into {SHAPES} (default: all)")
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"from {','.join(CONFIGS)} or any W<1-8>A<1-8> (default: "
                             f"{','.join(CONFIGS)})")
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help=f"subset of {','.join(ENGINES)} (default: all)")
    parser.add_argument("--define", action="append", default=[], metavar="NAME=VALUE",
                        help="a preprocessor definition for every kernel (to time a variant)")
    args = parser.parse_args()
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")]
    configs = args.configs.split(",")
    engines = [ENGINE_ALIASES.get(e, e) for e in args.engines.split(",")]
    for name in configs:
        if name not in CONFIGS and not re.fullmatch(r"W[1-8]A[1-8]", name):
            parser.error(f"--configs: {name!r} is neither one of {','.join(CONFIGS)} nor "
                         f"of the form W<bits>A<bits>")
    for name in engines:
        if name not in ENGINES:
            parser.error(f"--engines: unknown engine {name!r}")
    cp = need_gpu()

    from soniq_fast.cuda.backend import CudaBackend
    from soniq_fast.cuda.launch.gemm import integer_gemm
    from soniq_fast.cuda.launch.geometry import linear_geometry
    from soniq_fast.cuda.runtime.gpu import GpuRuntime

    rt = GpuRuntime(tuple(f"-D{d}" for d in args.define))
    backend = CudaBackend(rt, "cuda")
    gpu_name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    rng = np.random.default_rng(0)
    cp.random.seed(0)
    rows, wrong = [], []
    for m, k, n in shapes:
        fp16 = fp16_baselines(cp, m, k, n, args.min_time)
        fp16_best = min(fp16.values())
        int8_fn, int8_how = int8_baseline(cp, m, k, n)
        int8 = time_gpu(cp, int8_fn, args.min_time) if int8_fn else None
        print(f"{(m, k, n)}: FP16 {fp16} s, INT8 {int8} s ({int8_how})", flush=True)
        for name in configs:
            a_bits, hi, w_bits = config_bits(name, k, n, rng)
            a = device_codes(cp, m, a_bits, 1, k)
            w = device_codes(cp, n, w_bits, 0, k)
            want = exact_product(cp, a, a_bits, hi, w, w_bits)
            packed = backend.pack_weights(cp.asnumpy(w), w_bits)
            shift = rt.to_device((hi - a_bits).astype(np.uint8))
            for label in engines:
                run = (lambda e=ENGINES[label]: integer_gemm(rt, e, a, shift, linear_geometry(k),
                                                             m, hi, packed, 1))
                got = run().reshape(m, n)
                exact = bool(cp.array_equal(got.astype(cp.float64), want))
                if not exact:
                    wrong.append((name, label, (m, k, n)))
                ours = time_gpu(cp, run, args.min_time)
                del got
                ops = 2.0 * m * k * n
                rows.append(dict(shape=[m, k, n], config=name, engine=label, exact=exact,
                                 seconds=ours, tops=ops / ours / 1e12, fp16_seconds=fp16,
                                 int8_seconds=int8, int8_baseline=int8_how,
                                 vs_fp16=fp16_best / ours,
                                 vs_int8=(int8 / ours) if int8 else None))
                print(f"  {name:6s} {label:9s} {ours * 1e3:9.3f} ms  {rows[-1]['tops']:8.1f} TOPS"
                      f"  x FP16 {rows[-1]['vs_fp16']:6.2f}  exact={exact}", flush=True)
            del want, packed
            cp.get_default_memory_pool().free_all_blocks()
    print(f"\nGPU: {gpu_name}; command: python benchmarks/cuda_gemm.py {' '.join(sys.argv[1:])}\n")
    print("| M, K, N | config | engine | ms | TOPS | x cuBLAS FP16 | x cuBLAS INT8 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        vs_int8 = f"{r['vs_int8']:.2f}" if r["vs_int8"] else "n/a"
        print(f"| {tuple(r['shape'])} | {r['config']} | {r['engine']} | {r['seconds'] * 1e3:.3f} | "
              f"{r['tops']:.1f} | {r['vs_fp16']:.2f} | {vs_int8} |")
    print("\ncuBLAS FP16 = the faster of " + ", ".join(sorted(rows[0]["fp16_seconds"])) if rows
          else "")
    print("cuBLAS INT8 through: " + "; ".join(sorted({r["int8_baseline"] for r in rows})))
    if args.json:
        with open(args.json + ".tmp", "w") as f:
            json.dump(dict(gpu=gpu_name, command=sys.argv, rows=rows), f, indent=1)
        os.replace(args.json + ".tmp", args.json)
    if wrong:
        print(f"cuda_gemm: WRONG RESULTS for {wrong}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
