"""Bit-width curve: cpu ``linear_int`` time per output element, weight bits x activation bits.

On one shape (M, K, N) -- by default 256x1024x1024 -- it times ``linear_int`` of the
``cpu`` backend on weights packed beforehand, for every uniform configuration W1..W8 x
A1..A8 (every output channel at W bits, every input channel at A bits, A the layer's
top activation width), on each code path (ISA) this CPU runs: ``scalar``, ``avx2``,
``avx512`` (``CpuBackend.variant``, the same pinning as ``SONIQ_CPU_ISA``). The code
paths of one configuration are sampled in turn (medians over ``--repeats``), so load
from elsewhere hits them alike. Each result is checked against the reference
(``soniq_ref.linear_int``) bit for bit unless ``--no-check``.

Prints one markdown grid per ISA: nanoseconds per output element (time / (M * N);
rows: weight bits, columns: activation bits) -- the cost of each point of a palette.
When ONNX Runtime is installed it also prints its INT8 ``MatMulInteger`` (uint8 x int8)
on the same shape and thread count, the line to beat. ``--json`` also records which
engines each call ran (``last_path``); ``--engines`` prints them as grids too.

Clocks: ``--clock thread`` (the calling thread's CPU time) is right for one thread on a
busy machine; with more threads the script always uses wall time.

Usage:  python benchmarks/bit_curve.py [--shape 256,1024,1024] [--isas scalar,avx2,avx512]
            [--bits 1,2,4,8] [--threads 1] [--repeats 5] [--clock thread] [--engines]
            [--no-check] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the packages of this checkout, not an installed copy
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from baselines import (add_clock_option, clock_for, machine, markdown_table,  # noqa: E402
                       median_seconds, paired_median_seconds, write_json)

BITS = tuple(range(1, 9))


def uniform_codes(rng, shape: tuple, bits: int) -> np.ndarray:
    """uint8 codes in [0, 2^bits) of ``shape``."""
    return rng.integers(0, 1 << bits, shape, dtype=np.uint8)


def bench_config(backends: dict, shape: tuple, w_bits: int, a_bits: int, repeats: int,
                 clock: str, check: bool) -> list[dict]:
    """One row per ISA for configuration W``w_bits`` A``a_bits``."""
    import soniq_ref

    m, k, n = shape
    rng = np.random.default_rng([w_bits, a_bits])
    a, w = uniform_codes(rng, (m, k), a_bits), uniform_codes(rng, (n, k), w_bits)
    ab, wb = np.full(k, a_bits, np.uint8), np.full(n, w_bits, np.uint8)
    expected = soniq_ref.linear_int(a, ab, w, wb, a_bits) if check else None
    calls = []
    for isa, backend in backends.items():
        packed = backend.pack_weights(w, wb)
        if check:
            got = backend.linear_int(a, ab, packed, None, a_bits)
            assert np.array_equal(got, expected), f"{isa} W{w_bits}A{a_bits} differs from ref"
        calls.append(lambda b=backend, p=packed: b.linear_int(a, ab, p, None, a_bits))
    times = paired_median_seconds(calls, repeats, clock=clock)
    rows = []
    for (isa, backend), call, t in zip(backends.items(), calls, times):
        call()
        rows.append(dict(isa=isa, w_bits=w_bits, a_bits=a_bits, seconds=t,
                         ns_per_output=t / (m * n) * 1e9, engines=list(backend.last_path[1])))
    return rows


def int8_line(shape: tuple, threads: int, repeats: int, clock: str) -> str | None:
    """ONNX Runtime MatMulInteger's time per output on ``shape``, or None without it."""
    if any(importlib.util.find_spec(name) is None for name in ("onnx", "onnxruntime")):
        return None
    from baselines import ort_matmul_integer

    m, k, n = shape
    rng = np.random.default_rng(0)
    run = ort_matmul_integer(rng.integers(0, 256, (m, k), dtype=np.uint8),
                             rng.integers(-128, 128, (k, n), dtype=np.int8), threads)
    t = median_seconds(run, repeats, clock=clock)
    return f"ONNX Runtime INT8 MatMulInteger, same shape: {t / (m * n) * 1e9:.3f} ns per output"


def grid(rows: list, isa: str, bits: tuple, engines: bool = False) -> str:
    """The W x A grid of ``isa``: ns per output, or (``engines``) the engines that ran."""
    cell = {(r["w_bits"], r["a_bits"]): "+".join(r["engines"]) if engines
            else f"{r['ns_per_output']:.3f}" for r in rows if r["isa"] == isa}
    return markdown_table([f"{isa}: {'engines' if engines else 'ns / output'}"]
                          + [f"A{a}" for a in bits],
                          [[f"W{w}"] + [cell[w, a] for a in bits] for w in bits])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="256,1024,1024", help="M,K,N")
    parser.add_argument("--isas", help="comma-separated code paths (default: every one this "
                                       "CPU runs)")
    parser.add_argument("--bits", default=",".join(map(str, BITS)),
                        help="comma-separated widths to time, for weights and activations "
                             "alike (default: 1..8)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    add_clock_option(parser)
    parser.add_argument("--engines", action="store_true",
                        help="also print which engine ran each configuration")
    parser.add_argument("--no-check", action="store_true", help="skip the exactness check")
    parser.add_argument("--json", help="write the measurements to this JSON file")
    args = parser.parse_args(argv)

    from soniq_fast.cpu import BACKEND
    from soniq_fast.cpu.isa import ISA_NAMES, supported

    shape = tuple(int(v) for v in args.shape.split(","))
    if len(shape) != 3 or min(shape) < 1:
        parser.error(f"--shape must be three positive integers M,K,N, got {args.shape!r}")
    bits = tuple(int(b) for b in args.bits.split(","))
    if not set(bits) <= set(BITS):
        parser.error(f"--bits must be widths in 1..8, got {args.bits!r}")
    isas = args.isas.split(",") if args.isas else [i for i in ISA_NAMES if supported(i)]
    backends = {isa: BACKEND.variant(isa).with_threads(args.threads) for isa in isas}
    clock = clock_for(args.clock, args.threads)
    rows = []
    for w_bits in bits:
        for a_bits in bits:
            rows += bench_config(backends, shape, w_bits, a_bits, args.repeats, clock,
                                 not args.no_check)
            print(f"  W{w_bits}A{a_bits}: " + ", ".join(
                f"{r['isa']} {r['ns_per_output']:.3f} ns" for r in rows[-len(isas):]),
                file=sys.stderr)
    m, k, n = shape
    print(f"linear_int, M x K x N = {m} x {k} x {n}, {args.threads} thread(s), {clock} clock; "
          f"ns per output element (time / (M * N))\n")
    for isa in isas:
        print(grid(rows, isa, bits))
        print()
        if args.engines:
            print(grid(rows, isa, bits, engines=True))
            print()
    baseline = int8_line(shape, args.threads, args.repeats, clock)
    if baseline:
        print(baseline)
    if args.json:
        write_json(args.json, {"benchmark": "bit_curve", "shape": list(shape),
                               "threads": args.threads, "clock": clock,
                               "machine": machine(), "int8_baseline": baseline,
                               "results": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
