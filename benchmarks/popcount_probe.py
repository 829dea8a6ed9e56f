"""This CPU's AND + popcount peak, and how close the W1A1 GEMM of the cpu backend gets.

Both are single-threaded and timed in CPU time of the calling thread (``time.thread_time``),
so time spent waiting for a core on a shared machine is left out of both alike.

The probe runs the instruction mix of the popcount engine of the best code path this CPU
has, with every operand in registers, on one thread -- avx512: AND, VPOPCNTQ, VPADDQ on 24
accumulators; avx2: two ANDs with nibble-split weights, two VPSHUFB table lookups and two
byte adds per 256 bits, on 8 accumulators -- and reports binary multiply-accumulates per
second (one bit of W AND one bit of A counted). The W1A1 GEMM of the same code path does
M * N * K of them per call, activation packing and the int64 output included.

Usage:  python benchmarks/popcount_probe.py [--json out.json] [--isa avx2|avx512]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import machine, markdown_table, median_seconds, write_json  # noqa: E402

SHAPES = [(256, 1024, 1024), (1024, 1024, 1024), (64, 4096, 4096), (3136, 576, 64)]


def probe_peak(isa: str, seconds: float = 0.3) -> float:
    """Binary MACs per second of the register-only AND + popcount loop (median of 5)."""
    from soniq_fast.cpu import _kernels
    from soniq_fast.cpu.isa import ISA_NAMES
    index = ISA_NAMES.index(isa)
    iterations = 1 << 16
    while True:
        start = time.thread_time()
        macs = _kernels.popcount_probe(index, iterations)
        elapsed = time.thread_time() - start
        if macs == 0:
            raise SystemExit(f"popcount_probe: this CPU cannot run the {isa} code path; "
                             "nothing measured")
        if elapsed > seconds / 5:
            break
        iterations *= 2
    rates = []
    for _ in range(5):
        start = time.thread_time()
        macs = _kernels.popcount_probe(index, iterations)
        rates.append(macs / (time.thread_time() - start))
    return float(np.median(rates))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the measurements to this JSON file")
    parser.add_argument("--isa", choices=("avx2", "avx512"),
                        help="code path to probe (default: the best this CPU has)")
    args = parser.parse_args(argv)
    from soniq_fast.cpu import BACKEND
    from soniq_fast.cpu.isa import best_isa
    isa = args.isa or best_isa()
    if isa == "scalar":
        raise SystemExit("popcount_probe: this CPU has neither AVX2 nor AVX-512; nothing measured")
    backend = BACKEND.variant(isa).with_threads(1)
    peak = probe_peak(isa)
    rng = np.random.default_rng(0)
    rows = []
    for m, k, n in SHAPES:
        a = rng.integers(0, 2, (m, k), dtype=np.uint8)
        w = rng.integers(0, 2, (n, k), dtype=np.uint8)
        packed = backend.pack_weights(w, np.ones(n, np.uint8))
        bits = np.ones(k, np.uint8)
        t = median_seconds(lambda: backend.linear_int(a, bits, packed, None, 1), clock="thread")
        rate = m * n * k / t
        rows.append(dict(shape=[m, k, n], seconds=t, binary_macs_per_s=rate,
                         fraction_of_peak=rate / peak))
    print(f"{isa} AND + popcount peak, one thread: {peak / 1e12:.3f} T binary MAC/s")
    print(markdown_table(["M, K, N", "W1A1 ms", "T binary MAC/s", "of peak"],
                         [[", ".join(map(str, r["shape"])), f"{r['seconds'] * 1e3:.3f}",
                           f"{r['binary_macs_per_s'] / 1e12:.3f}",
                           f"{100 * r['fraction_of_peak']:.0f}%"] for r in rows]))
    if args.json:
        write_json(args.json, {"benchmark": "popcount_probe", "isa": isa, "machine": machine(),
                               "peak_binary_macs_per_s": peak, "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
