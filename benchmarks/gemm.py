"""CPU GEMM benchmark: soniq ``cpu`` against ONNX Runtime INT8 and NumPy float32.

For each shape (M, K, N) and precision configuration it times, in one process:
  soniq cpu   -- linear_int on weights packed beforehand (activation packing, row sums
                 and the int64 result included: everything linear_int does per call)
  ORT INT8    -- ONNX Runtime MatMulInteger, uint8 x int8 -> int32, weights an initializer
                 (the script also reports how many of its outputs equal the exact product:
                 kernels that add u8 x s8 products in saturating int16 pairs are not exact)
  fbgemm INT8 -- PyTorch's quantized linear on fbgemm (per-channel qint8 weights, quint8
                 activations, output requantized to quint8), where PyTorch is installed
  NumPy fp32  -- a @ w.T in float32 (BLAS)
single-threaded and with all threads, as medians over repeats, and prints
ratio = baseline time / soniq time (> 1: soniq is faster) as a markdown table.

Usage:  python benchmarks/gemm.py [--json out.json] [--repeats 7] [--shapes 0,1]
For the NumPy baseline run it with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import (clock_for, fbgemm_linear, kernel_parser, machine,  # noqa: E402
                       markdown_table, paired_median_seconds, thread_counts,
                       numpy_seconds, ort_matmul_integer, write_json)

SHAPES = [(256, 1024, 1024), (1024, 1024, 1024), (3136, 576, 64), (64, 4096, 4096)]
CONFIGS = ["W1A1", "W1A2", "W2A2", "W4A4", "W8A8", "mixed"]


def config_bits(name: str, k: int, n: int, rng):
    """(a_bits uint8 [K], act_bits_hi, w_bits uint8 [N]) of a configuration.

    mixed: 75% of output channels at W1 and 25% at W4, input channels half A2, half A8.
    """
    if name == "mixed":
        a_bits = np.where(np.arange(k) % 2 == 0, 2, 8).astype(np.uint8)
        w_bits = np.where(rng.permutation(n) < (3 * n) // 4, 1, 4).astype(np.uint8)
        return a_bits, 8, w_bits
    wb, ab = int(name[1]), int(name[3])
    return np.full(k, ab, np.uint8), ab, np.full(n, wb, np.uint8)


def random_codes(rng, rows: int, bits: np.ndarray, axis: int, cols: int) -> np.ndarray:
    top = (1 << bits.astype(np.int64))
    shape = (rows, cols)
    scale = top.reshape(1, -1) if axis == 1 else top.reshape(-1, 1)
    return np.floor(rng.random(shape) * scale).astype(np.uint8)


def bench_shape(shape, threads_list, repeats, rng, backend, check, clock_name="wall"):
    import soniq_ref
    m, k, n = shape
    a_u8 = rng.integers(0, 256, (m, k), dtype=np.uint8)
    w_s8 = rng.integers(-128, 128, (k, n), dtype=np.int8)
    a32, w32 = rng.standard_normal((m, k), np.float32), rng.standard_normal((n, k), np.float32)
    ops = 2.0 * m * k * n
    rows = []
    ort_exact = None
    for threads in threads_list:
        ort = ort_matmul_integer(a_u8, w_s8, threads)
        if ort_exact is None:   # float64 products and sums of these values are exact
            exact = a_u8.astype(np.float64) @ w_s8.astype(np.float64)
            ort_exact = float(np.mean(ort() == exact))
            print(f"  {shape}: ONNX Runtime MatMulInteger equals the exact product in "
                  f"{100 * ort_exact:.3f} % of its outputs", file=sys.stderr)
        fbgemm = fbgemm_linear(a_u8, w_s8, threads)
        ours = backend.with_threads(threads)
        clock = clock_for(clock_name, threads)
        first = len(rows)
        for name in CONFIGS:
            a_bits, hi, w_bits = config_bits(name, k, n, rng)
            a = random_codes(rng, m, a_bits, 1, k)
            w = random_codes(rng, n, w_bits, 0, k)
            packed = ours.pack_weights(w, w_bits)
            if check and threads == threads_list[0]:
                got = ours.linear_int(a, a_bits, packed, None, hi)
                assert np.array_equal(got, soniq_ref.linear_int(a, a_bits, w, w_bits, hi)), name
            # baseline and soniq samples taken in turn, so load changes hit all alike
            ours_fn = lambda: ours.linear_int(a, a_bits, packed, None, hi)  # noqa: E731
            times = paired_median_seconds([ort, ours_fn] + ([fbgemm] if fbgemm else []),
                                          repeats, clock=clock)
            ort_t, t = times[:2]
            fb_t = times[2] if fbgemm else None
            rows.append(dict(shape=list(shape), threads=threads, clock=clock, config=name,
                             soniq_s=t, ort_exact_fraction=ort_exact,
                             ort_int8_s=ort_t, soniq_gops=ops / t / 1e9,
                             ort_gops=ops / ort_t / 1e9, ratio_ort=ort_t / t,
                             fbgemm_int8_s=fb_t, ratio_fbgemm=fb_t / t if fb_t else None,
                             engines=list(ours.last_path[1])))
            print(f"  {shape} threads={threads} {name}: soniq {t * 1e3:.3f} ms, "
                  f"ORT {ort_t * 1e3:.3f} ms, ratio {ort_t / t:.2f}"
                  + (f", fbgemm {fb_t * 1e3:.3f} ms, ratio {fb_t / t:.2f}" if fb_t else ""),
                  file=sys.stderr)
        # NumPy last: OpenBLAS worker threads keep spinning for a while after a call
        np_t = numpy_seconds(lambda: a32 @ w32.T, threads, repeats, clock)
        for row in rows[first:]:
            row["numpy_fp32_s"] = np_t
            row["ratio_numpy"] = np_t / row["soniq_s"]
    return rows


def main(argv=None) -> int:
    parser = kernel_parser(__doc__.splitlines()[0])
    parser.add_argument("--shapes", help="comma-separated indices into SHAPES (default: all)")
    args = parser.parse_args(argv)

    from soniq_fast.cpu import BACKEND
    threads_list = thread_counts(args.threads)
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")] if args.shapes else SHAPES
    rng = np.random.default_rng(0)
    rows = []
    for shape in shapes:
        rows += bench_shape(shape, threads_list, args.repeats, rng, BACKEND, not args.no_check,
                            args.clock)

    table = markdown_table(
        ["M, K, N", "threads", "config", "soniq ms", "ORT INT8 ms", "fbgemm INT8 ms",
         "NumPy fp32 ms", "ORT / soniq", "fbgemm / soniq", "NumPy / soniq"],
        [[", ".join(map(str, r["shape"])), f"{r['threads']} ({r['clock']})", r["config"],
          f"{r['soniq_s'] * 1e3:.3f}", f"{r['ort_int8_s'] * 1e3:.3f}",
          f"{r['fbgemm_int8_s'] * 1e3:.3f}" if r["fbgemm_int8_s"] else "-",
          f"{r['numpy_fp32_s'] * 1e3:.3f}", f"{r['ratio_ort']:.2f}x",
          f"{r['ratio_fbgemm']:.2f}x" if r["ratio_fbgemm"] else "-",
          f"{r['ratio_numpy']:.2f}x"] for r in rows])
    print(table)
    if args.json:
        write_json(args.json, {"benchmark": "gemm", "isa": BACKEND.isa, "machine": machine(),
                               "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
