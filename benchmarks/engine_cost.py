"""Cost of each cpu engine per (weight bits, activation bits, shape): the figures behind the
engine rule in ``soniq_fast/cpu/engines.py``.

For each shape M x K x N and configuration WxAy (every channel alike; ``mixed`` as in
gemm.py) it times ``linear_int`` on weights packed beforehand with each engine forced
(``with_engine``), single-threaded, the engines' samples taken in turn (``--clock thread``:
CPU time of the calling thread, right on a busy machine); prints a markdown table of
medians in milliseconds, with the engines that ran.

Usage:  python benchmarks/engine_cost.py --shapes 1024x1024x1024,3136x576x64
            --configs W1A2,W2A2 --engines popcount,lut,int8 [--isa avx512] [--repeats 9]
            [--clock thread] [--no-check]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from baselines import add_clock_option, markdown_table, paired_median_seconds  # noqa: E402
from gemm import config_bits, random_codes  # noqa: E402


def shape_arg(text: str) -> tuple:
    m, k, n = (int(v) for v in text.lower().split("x"))
    return m, k, n


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1024x1024x1024,3136x576x64,256x1024x1024")
    parser.add_argument("--configs", default="W1A2,W2A2,W1A3,W1A4,W1A8")
    parser.add_argument("--engines", default="popcount,lut,int8,auto")
    parser.add_argument("--isa", default=None, help="code path (default: the best here)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-check", action="store_true", help="skip the exactness check")
    add_clock_option(parser)
    args = parser.parse_args(argv)

    import soniq_ref
    from soniq_fast.cpu import BACKEND
    backend = (BACKEND if args.isa is None else BACKEND.variant(args.isa)).with_threads(1)
    engines = args.engines.split(",")
    rng = np.random.default_rng(0)
    rows = []
    for shape in (shape_arg(s) for s in args.shapes.split(",")):
        m, k, n = shape
        for name in args.configs.split(","):
            a_bits, hi, w_bits = config_bits(name, k, n, rng)
            a = random_codes(rng, m, a_bits, 1, k)
            w = random_codes(rng, n, w_bits, 0, k)
            want = None if args.no_check else soniq_ref.linear_int(a, a_bits, w, w_bits, hi)
            calls, used = [], []
            for engine in engines:
                ours = backend.with_engine(engine)
                packed = ours.pack_weights(w, w_bits)
                got = ours.linear_int(a, a_bits, packed, None, hi)
                assert want is None or np.array_equal(got, want), (shape, name, engine)
                used.append("+".join(ours.last_path[1]))
                calls.append(lambda o=ours, p=packed: o.linear_int(a, a_bits, p, None, hi))
            times = paired_median_seconds(calls, args.repeats, clock=args.clock)
            rows.append(["x".join(map(str, shape)), name] +
                        [f"{t * 1e3:.3f} ({u})" for t, u in zip(times, used)])
    print(markdown_table(["M x K x N", "config"] + [f"{e} ms" for e in engines], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
