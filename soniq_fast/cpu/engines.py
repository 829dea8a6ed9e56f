"""Which cpu engine computes which block, per code path (ISA): the rules and the figures behind
them, in one place.

Three engines compute a block of output channels of one weight width ``bw`` against one
activation group of width ``ba`` (see :mod:`.packed` for their layouts):

* popcount: one AND + popcount pass per pair of bit planes, ``bw * ba`` passes;
* lut: one table lookup per weight plane and 4 K positions, whatever ``ba`` (tables of
  codes above 4 bits split into two nibble tables, so twice the lookups), ``bw`` passes,
  plus building every row's tables;
* int8: one multiply-add per K position at any width (VNNI ``vpdpbusd`` on AVX-512; on AVX2
  ``vpmaddubsw`` while its int16 sums are exact, else int16 ``vpmaddwd``).

**Engine rule** (:func:`choose_engine`, policy ``auto``), in this order:

1. popcount when ``bw * ba <= POPCOUNT_FIRST_PLANE_PAIRS[isa]``;
2. lut when ``ba >= 2``, ``bw * lut_tables(ba) <= LUT_MAX_LOOKUPS[isa]`` and the block has
   channels enough to pay for the row tables (``channels * bw >= LUT_MIN_PLANES *
   lut_tables(ba)^2``; measured: the digits CNN's second conv, 48 W1 channels at A2, gains
   on AVX2; its first, 8 W1 channels at A8 with K = 9, loses);
3. popcount when ``bw * ba <= POPCOUNT_MAX_PLANE_PAIRS[isa]``;
4. int8 otherwise.

Figures: single-thread GEMM (``linear_int``, weights packed beforehand), milliseconds of
thread CPU time, median of 9, engine forced with ``with_engine``; the machine was shared, so
differences under about 10 % are noise.

*AVX-512* (AMD EPYC Zen 4, 2 cores, AVX-512 F/BW/DQ/VPOPCNTDQ/VNNI/VBMI/BITALG), shapes
1024^3 / 3136x576x64 / 256x1024x1024, popcount vs lut (``core/lut_avx512.c``) vs int8::

    W1A2  3.43 / 0.48 / 0.77   3.07 / 0.53 / 0.72   6.00 / 0.93 / 1.42
    W2A2  5.40 / 0.77 / 1.29   6.25 / 0.77 / 1.41   5.92 / 0.97 / 1.45
    W1A3  4.25 / 0.64 / 1.00   4.62 / 0.56 / 0.77   5.70 / 0.96 / 1.37
    W1A4  5.42 / 0.81 / 1.38   3.67 / 0.62 / 0.94   5.90 / 0.93 / 1.43
    W2A3  8.27 / 1.10 / 1.95   6.23 / 0.81 / 1.52   5.90 / 0.93 / 1.47
    W2A4 10.27 / 1.42 / 2.59   7.17 / 1.02 / 1.69   5.87 / 0.96 / 1.44
    W3A2  8.19 / 1.12 / 1.99   8.12 / 1.06 / 1.97   5.79 / 0.94 / 1.41
    W1A5  7.06 / 0.94 / 1.61   7.82 / 1.19 / 1.88   5.84 / 0.99 / 1.44

Zen 4 runs a 512-bit ``vpshufb`` and ``vpopcntq`` each at about one per cycle, so a lut pass
(16 channels x 16 K positions) costs about one popcount pass (8 channels x 64 positions of
one plane pair): lut beats popcount only where ``ba`` has more planes than the two it
replaces, i.e. W1 x A3..A4 (one table); from two lut passes on, the int8 engine ties or wins.
Hence on avx512: popcount up to 2 plane pairs, lut for one pass, popcount up to 4 pairs (W2A2
and W4A1: ties with the other engines), int8 beyond.

*AVX2* (AMD EPYC Zen 3, docs/benchmarks.md): no vector popcount (bits are counted by
nibble lookups), so lut wins from A2 on for up to 2 lookups (W1 x A2..A8, W2 x A2..A4) and
popcount only up to 2 plane pairs; int8 keeps int16 partial sums.

Not yet measured on an AVX2 machine with these rules: they leave the AVX2 choices as they
were.

**Direct convolution** (:func:`direct_conv`, ``core/direct_conv_avx2.c``): a stride-1 conv
with the requantize fused and ``0 < K <= DIRECT_MAX_K`` (first layers: one grey channel
3x3 gives K = 9) runs without im2col, 8 output positions per vector, on the avx2 and the
avx512 paths under the auto policy. Figures, digits CNN deploy model at batch 256, first
conv + requantize stage (``benchmarks/deploy_cnn.py --clock thread --repeats 15 --stages``,
1 thread): Zen 3 AVX2 0.26 ms direct against 0.89-0.99 ms as a GEMM; Zen 4 avx512 path 0.92
ms as a GEMM, see docs/benchmarks.md for the figure with the direct conv.

**int8 blocks** (:func:`int8_split_by_value_width`): on AVX2 the int8 kernel's int16 bounds
depend on the range of the values, so the int8 columns of an activation group are split into
one block per value width (``int8_steps`` says how many ``vpmaddubsw`` results of a width
pair fit int16); on the other paths the int8 term does not depend on ``bw`` and all int8
columns of a group form one block.
"""

from __future__ import annotations

POPCOUNT, INT8, LUT = 0, 1, 2
ENGINE_NAMES = ("popcount", "int8", "lut")
ENGINE_POLICIES = ("auto", "popcount", "int8", "lut")

# plane pairs up to which popcount is chosen before any other engine
POPCOUNT_FIRST_PLANE_PAIRS = {"scalar": 4, "avx2": 1, "avx512": 2}
# plane pairs up to which popcount beats int8 (after the lut engine had its turn)
POPCOUNT_MAX_PLANE_PAIRS = {"scalar": 4, "avx2": 2, "avx512": 4}
# table lookups (bw * lut_tables(ba)) up to which the lut engine is chosen
LUT_MAX_LOOKUPS = {"avx2": 2, "avx512": 1}
# a block needs channels * bw >= LUT_MIN_PLANES * lut_tables(ba)^2 to pay for the row tables
LUT_MIN_PLANES = 32

DIRECT_MAX_K = 64       # SONIQ_DIRECT_MAX_K in core/soniq_cpu.h
DIRECT_CONV_ISAS = ("avx2", "avx512")
INT8_VALUE_WIDTH_ISAS = ("avx2",)


def lut_tables(a_bits: int) -> int:
    """Tables per group of 4 K positions in the lut engine: codes above 4 bits split into
    their low and high nibbles (so every entry fits a byte)."""
    return 2 if a_bits > 4 else 1


def choose_engine(w_bits: int, a_bits: int, policy: str = "auto", isa: str = "scalar",
                  channels: int | None = None) -> int:
    """Engine for a (weight width, activation width) block of ``channels`` output channels
    (None: many) under ``policy`` on ``isa`` (the rule in the module docstring)."""
    if policy == "popcount":
        return POPCOUNT
    if policy == "int8":
        return INT8
    if policy == "lut":
        return LUT
    pairs = w_bits * a_bits
    if pairs <= POPCOUNT_FIRST_PLANE_PAIRS[isa]:
        return POPCOUNT
    tables = lut_tables(a_bits)
    if a_bits > 1 and w_bits * tables <= LUT_MAX_LOOKUPS.get(isa, 0) and \
            (channels is None or channels * w_bits >= LUT_MIN_PLANES * tables ** 2):
        return LUT
    return POPCOUNT if pairs <= POPCOUNT_MAX_PLANE_PAIRS[isa] else INT8


def direct_conv(isa: str, policy: str, k: int) -> bool:
    """Whether a stride-1 conv with the requantize fused and K = C kh kw runs as a direct
    convolution instead of a GEMM."""
    return isa in DIRECT_CONV_ISAS and policy == "auto" and 0 < k <= DIRECT_MAX_K


def int8_split_by_value_width(isa: str) -> bool:
    """Whether the int8 columns of an activation group form one block per value width."""
    return isa in INT8_VALUE_WIDTH_ISAS


def int8_steps(w_bits: int, a_bits: int, shift: int) -> int:
    """How many vpmaddubsw results the AVX2 int8 kernel may add in int16 (0: none is exact).

    With a' <= amax = (2^ba - 1) 2^shift and -2^(bw-1) <= v < 2^(bw-1), one vpmaddubsw
    pair sum lies in [-amax 2^bw, amax (2^bw - 2)], so L of them fit int16 (no saturation,
    no wrap) while L * amax * 2^bw <= 32768. Must equal soniq_int8_steps() in
    core/soniq_cpu.h.
    """
    return 32768 // ((((1 << a_bits) - 1) << shift) << w_bits)
