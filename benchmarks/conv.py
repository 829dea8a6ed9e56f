"""CPU conv2d benchmark: soniq ``cpu`` against ONNX Runtime INT8 and NumPy float32.

Layers (batch, in channels, height, width, out channels, kernel, stride, padding):
a ResNet-style 3x3 layer on 56x56x64 and the two conv layers of the digits CNN
(8x8 inputs, 32 and 64 channels, batch 256). For each precision configuration it
times, in one process, single-threaded and with all threads (medians over repeats):
  soniq cpu   -- conv2d_int on weights packed beforehand (im2col, packing, int64 out)
  ORT INT8    -- ONNX Runtime ConvInteger, uint8 x int8 -> int32, weights an initializer
  NumPy fp32  -- im2col (NumPy strides) + a float32 matmul, the way a NumPy user would
and prints ratio = ORT time / soniq time as a markdown table.

Usage:  python benchmarks/conv.py [--json out.json] [--repeats 7]
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import (clock_for, kernel_parser, machine, markdown_table,  # noqa: E402
                       paired_median_seconds, thread_counts,
                       numpy_seconds, ort_conv_integer,
                       write_json)
from gemm import CONFIGS, config_bits  # noqa: E402

# name: (B, C, H, W, O, k, stride, padding)
LAYERS = {
    "resnet 3x3 56x56x64": (1, 64, 56, 56, 64, 3, 1, 1),
    "digits conv1 (b256)": (256, 1, 8, 8, 32, 3, 1, 1),
    "digits conv2 (b256)": (256, 32, 4, 4, 64, 3, 1, 1),
}


def numpy_conv(x32: np.ndarray, w32: np.ndarray, stride: int, padding: int):
    from soniq_ref.integer_core import im2col
    o, _, kh, kw = w32.shape
    w2 = w32.reshape(o, -1)
    return lambda: im2col(x32, kh, kw, stride, padding) @ w2.T


def bench_layer(name, layer, threads_list, repeats, rng, backend, check, clock_name="wall"):
    import soniq_ref
    b, c, h, w, o, k, stride, padding = layer
    x_u8 = rng.integers(0, 256, (b, c, h, w), dtype=np.uint8)
    w_s8 = rng.integers(-128, 128, (o, c, k, k), dtype=np.int8)
    x32 = rng.standard_normal((b, c, h, w), np.float32)
    w32 = rng.standard_normal((o, c, k, k), np.float32)
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    ops = 2.0 * b * ho * wo * o * c * k * k
    rows = []
    for threads in threads_list:
        ort = ort_conv_integer(x_u8, w_s8, stride, padding, threads)
        ours = backend.with_threads(threads)
        clock = clock_for(clock_name, threads)
        first = len(rows)
        for config in CONFIGS:
            a_bits, hi, w_bits = config_bits(config, c, o, rng)
            x = np.floor(rng.random((b, c, h, w)) * (2.0 ** a_bits).reshape(1, -1, 1, 1))
            x = x.astype(np.uint8)
            wc = np.floor(rng.random((o, c, k, k)) * (2.0 ** w_bits).reshape(-1, 1, 1, 1))
            wc = wc.astype(np.uint8)
            packed = ours.pack_weights(wc, w_bits)

            def run():
                return ours.conv2d_int(x, a_bits, packed, None, hi, stride=stride,
                                       padding=padding)
            if check and threads == threads_list[0]:
                want = soniq_ref.conv2d_int(x, a_bits, wc, w_bits, hi, stride=stride,
                                            padding=padding)
                assert np.array_equal(run(), want), (name, config)
            # ORT and soniq samples taken in turn, so load changes hit both alike
            ort_t, t = paired_median_seconds([ort, run], repeats, clock=clock)
            rows.append(dict(layer=name, shape=list(layer), threads=threads, clock=clock,
                             config=config,
                             soniq_s=t, ort_int8_s=ort_t,
                             soniq_gops=ops / t / 1e9, ratio_ort=ort_t / t,
                             engines=list(ours.last_path[1])))
            print(f"  {name} threads={threads} {config}: soniq {t * 1e3:.3f} ms, "
                  f"ORT {ort_t * 1e3:.3f} ms, ratio {ort_t / t:.2f}", file=sys.stderr)
        # NumPy last: OpenBLAS worker threads keep spinning for a while after a call
        np_t = numpy_seconds(numpy_conv(x32, w32, stride, padding), threads, repeats, clock)
        for row in rows[first:]:
            row["numpy_fp32_s"] = np_t
            row["ratio_numpy"] = np_t / row["soniq_s"]
    return rows


def main(argv=None) -> int:
    parser = kernel_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)

    from soniq_fast.cpu import BACKEND
    threads_list = thread_counts(args.threads)
    rng = np.random.default_rng(0)
    rows = []
    for name, layer in LAYERS.items():
        rows += bench_layer(name, layer, threads_list, args.repeats, rng, BACKEND,
                            not args.no_check, args.clock)
    table = markdown_table(
        ["layer", "threads", "config", "soniq ms", "ORT INT8 ms", "NumPy fp32 ms",
         "ORT / soniq", "NumPy / soniq"],
        [[r["layer"], f"{r['threads']} ({r['clock']})", r["config"],
          f"{r['soniq_s'] * 1e3:.3f}",
          f"{r['ort_int8_s'] * 1e3:.3f}", f"{r['numpy_fp32_s'] * 1e3:.3f}",
          f"{r['ratio_ort']:.2f}x", f"{r['ratio_numpy']:.2f}x"] for r in rows])
    print(table)
    if args.json:
        write_json(args.json, {"benchmark": "conv", "isa": BACKEND.isa, "machine": machine(),
                               "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
