"""Which cpu engine computes which block, per code path (ISA): the rules and the figures behind
them, in one place.

Three engines compute a block of output channels of one weight width ``bw`` against one
activation group of width ``ba`` (see :mod:`.packed` for their layouts):

* popcount: one AND + popcount pass per pair of bit planes, ``bw * ba`` passes;
* lut: one table lookup per weight plane and group of K positions, whatever ``ba`` (codes
  above 4 bits split into two nibble tables, so twice the lookups), ``bw`` passes, plus
  building every row's tables. 16-entry tables of 4 positions (``core/lut.h``), or on the
  avx512 path with VBMI 64-entry tables of 6 positions looked up for 64 channels at once
  (``core/lut_avx512.c``; :func:`lut_lanes`);
* int8: one multiply-add per K position at any width (VNNI ``vpdpbusd`` on AVX-512; on AVX2
  ``vpmaddubsw`` while its int16 sums are exact, else int16 ``vpmaddwd``).

**Engine rule** (:func:`choose_engine`, policy ``auto``; the tables below are keyed by
:func:`rule_key`: the ISA, or ``avx512+vbmi``), in this order:

0. int8 for a small block over few K positions (``SMALL_BLOCK_INT8``: at most that many
   channels and K positions), where the per-row work of bit planes or tables is not paid
   back;
1. popcount when ``bw * ba <= POPCOUNT_FIRST_PLANE_PAIRS``;
2. lut when ``ba >= 2``, ``lut_tables(ba) <= LUT_MAX_TABLES``, ``bw * lut_tables(ba) <=
   LUT_MAX_LOOKUPS`` and the block has channels enough to pay for the row tables
   (``channels * bw >= LUT_MIN_PLANES * lut_tables(ba)^2``);
3. popcount when ``bw * ba <= POPCOUNT_MAX_PLANE_PAIRS`` (``POPCOUNT_SHORT_K``: a lower
   limit for act groups of fewer K positions);
4. int8 otherwise.

Figures: single-thread GEMM (``linear_int``, weights packed beforehand), milliseconds of
thread CPU time, median of 5 to 9, engine forced with ``with_engine``:
``python benchmarks/engine_cost.py --isa avx512 --clock thread --shapes <MxKxN,...>
--configs <WxAy,...> --engines lut,popcount,int8``; the machine was shared with other work, so differences
under about 15 % are noise.

*avx512+vbmi* (AMD EPYC Zen 4, 2 cores, AVX-512 F/BW/DQ/VPOPCNTDQ/VNNI/VBMI/BITALG), lut
(64-entry tables) / popcount / int8::

    M x K x N          W1A2               W2A2               W1A3               W1A8
    1024x1024x1024     3.03 / 3.35 / 5.98  4.28 / 5.39 / 5.59  3.18 / 5.43 / 5.78* 5.89 / 9.97 / 5.62
    256x1024x1024      0.62 / 0.83 / 1.44  1.00 / 1.39 / 1.51  0.59 / 1.10 / 1.45  1.39 / 2.53 / 1.47
    64x4096x4096       2.05 / 2.29 / 5.66  4.16 / 4.94 / 6.19  2.10 / 3.41 / 5.88  7.09 / 8.50 / 5.79
    3136x576x512       2.80 / 4.09 / 5.56  4.18 / 5.96 / 5.43  2.74 / 5.24 / 5.36  5.76 / 11.9 / 5.53
    3136x576x256       1.76 / 1.92 / 3.06  2.65 / 3.24 / 3.02  1.80 / 2.64 / 2.96  3.65 / 6.34 / 3.08
    3136x576x128       1.76 / 1.03 / 1.62  1.59 / 2.06 / 1.60  1.30 / 1.41 / 1.59  2.44 / 3.40 / 1.38
    3136x576x64        1.05 / 0.55 / 0.73  1.03 / 1.03 / 0.77  1.06 / 1.01 / 0.72  2.00 / 1.80 / 0.75

(* W1A4). Blocks too small for the tables, popcount / int8 (``--engines popcount,int8``)::

    M x K x N        W2A2         W1A3         W1A4
    4096x288x64      1.05 / 0.57  1.03 / 0.72  0.92 / 0.62
    3136x576x64      0.97 / 0.76  0.96 / 0.92  0.95 / 0.75
    2048x512x128     1.23 / 0.97  1.16 / 1.07  1.08 / 0.80
    1024x1024x64     0.48 / 0.41  0.32 / 0.39  0.43 / 0.39
    256x2048x64      0.18 / 0.20  0.16 / 0.20  0.19 / 0.20

A row's 64-entry tables cost about 11 bytes per K position to build and store
(16-entry ones 4), used once per 64 channels and weight plane: below 256 channel-planes the
tables cost more than the lookups save. Two nibble tables (``ba > 4``) at best tie int8.
Hence: popcount for W1A1; lut for one table and up to 2 planes with at least 256 channel-
planes; popcount up to 3 plane pairs, and up to 2 below K = 1024 (where the popcount
kernel's per-tile costs weigh most); int8 beyond.

*avx512* without VBMI (measured on the Zen 4 machine with a 512-bit vpshufb port of the
16-entry kernel, which ran within about 10 % of the AVX2 kernel ``core/lut_avx2.c`` that
such a CPU runs; not measured on a CPU without VBMI): per engine (popcount, then lut, then
int8) the shapes 1024^3 / 3136x576x64 / 256x1024x1024::

    W1A2  3.43 / 0.48 / 0.77   3.07 / 0.53 / 0.72   6.00 / 0.93 / 1.42
    W2A2  5.40 / 0.77 / 1.29   6.25 / 0.77 / 1.41   5.92 / 0.97 / 1.45
    W1A3  4.25 / 0.64 / 1.00   4.62 / 0.56 / 0.77   5.70 / 0.96 / 1.37
    W1A4  5.42 / 0.81 / 1.38   3.67 / 0.62 / 0.94   5.90 / 0.93 / 1.43
    W2A3  8.27 / 1.10 / 1.95   6.23 / 0.81 / 1.52   5.90 / 0.93 / 1.47
    W1A5  7.06 / 0.94 / 1.61   7.82 / 1.19 / 1.88   5.84 / 0.99 / 1.44

Zen 4 runs a 512-bit ``vpshufb`` and ``vpopcntq`` each at about one per cycle, so a 16-entry
lut pass (16 channels x 16 K positions) costs about one popcount pass (8 channels x 64
positions of one plane pair): it beats popcount only where ``ba`` has more planes than the
two it replaces (W1 x A3..A4). Hence: popcount up to 2 plane pairs, lut for one lookup,
popcount up to 4 pairs, int8 beyond. (The VBMI rule is what Zen 4 runs.)

*avx2* (AMD EPYC Zen 3, docs/benchmarks.md): no vector popcount (bits are counted by
nibble lookups), so lut wins from A2 on for up to 2 lookups (W1 x A2..A8, W2 x A2..A4) and
popcount only up to 2 plane pairs; int8 keeps int16 partial sums. The minimum of 32
channel-planes per table is measured there: the digits CNN's second conv, 48 W1 channels at
A2, gains; its first, 8 W1 channels at A8 with K = 9, loses. Remeasured on that CPU after
the AVX-512 work (``--isa avx2 --clock thread --repeats 5``, two training runs sharing the
machine at low priority), lut / popcount / int8::

    M x K x N          W1A2               W2A2               W1A4               W2A3
    1024x1024x1024     4.14 / 6.53 / 9.10  6.34 / 11.8 / 8.79  5.96 / 13.5 / 10.6  7.25 / 16.8 / 9.42
    256x1024x1024      0.94 / 1.60 / 2.23  2.35 / 4.34 / 3.41  1.06 / 3.11 / 2.59  2.31 / 5.53 / 2.38
    3136x576x64        0.68 / 0.91 / 1.07  0.97 / 1.49 / 1.08  0.72 / 1.62 / 1.06  1.03 / 2.26 / 1.09
    3136x576x256       1.99 / 3.18 / 4.35  3.40 / 6.14 / 4.09  2.24 / 6.27 / 4.69  3.86 / 9.03 / 4.31

                       W2A4               W1A8 (2 tables)    W3A2 (3 lookups)
    1024x1024x1024     8.20 / 24.1 / 9.94  8.23 / 24.1 / 9.51  9.16 / 16.6 / 9.15
    256x1024x1024      2.46 / 6.14 / 2.54  1.86 / 5.85 / 2.09  2.19 / 4.09 / 2.01
    3136x576x64        1.12 / 3.02 / 1.10  1.35 / 3.17 / 1.07  1.27 / 2.32 / 1.06
    3136x576x256       4.80 / 12.1 / 4.79  4.66 / 11.1 / 4.80  4.51 / 9.03 / 4.27

The rule stands: lut wins or ties wherever it is chosen; W1A8 at 64 channels (64 channel-
planes, under 32 x 2^2 for two tables) goes to int8, which wins there by a fifth; three
lookups (W3A2) never beat int8; popcount beyond one plane pair loses to both.

*Small blocks on avx2* (Zen 3, the same machine and conditions; ``linear_int``, M = 16384,
N = 32, engine forced, ms): popcount / lut / int8 ::

    K      W1A1           W1A2                  W2A1
    9      0.886 / 0.657  1.232 / 0.876 / 0.686  1.140 / 0.699
    36     0.981 / 0.809  1.310 / 1.042 / 0.837  1.879 / 1.429
    72     0.980 / 0.852  1.380 / 1.150 / 0.937  1.754 / 1.026
    144    1.356 / 1.415  2.723 / 2.114 / 2.046  1.965 / 1.460

while at N = 256 (M = 4096, K = 9) popcount already wins W1A1 (1.060 against 1.189): the
planes are built once per row for all the channels. Hence int8 up to 32 channels and 72 K
positions; e.g. the 3x3 convolution of one grey channel into 32 (digits conv1, K = 9) at
75 % W1 / 25 % W4: 1.489 ms with popcount and int8 blocks, 0.768 ms all int8 (W8A8: 0.986).

**Direct convolution** (:func:`direct_conv`, ``core/direct_conv_avx2.c``): a stride-1 conv
with the requantize fused and ``0 < K <= DIRECT_MAX_K`` (first layers: one grey channel
3x3 gives K = 9) runs without im2col, 8 output positions per vector, on the avx2 and the
avx512 paths under the auto policy. Digits CNN deploy model at batch 256, first conv +
requantize stage (``benchmarks/deploy_cnn.py --clock thread --repeats 15 --stages``, 1
thread): Zen 3 avx2 path 0.26 ms direct against 0.89-0.99 ms as a GEMM; Zen 4 avx512 path
0.30 ms direct against 0.92 ms as a GEMM.

**int8 blocks** (:func:`int8_split_by_value_width`): on AVX2 the int8 kernel's int16 bounds
depend on the range of the values, so the int8 columns of an activation group are split into
one block per value width (``int8_steps`` says how many ``vpmaddubsw`` results of a width
pair fit int16); on the other paths the int8 term does not depend on ``bw`` and all int8
columns of a group form one block.
"""

from __future__ import annotations

from ._kernels import (DIRECT_MAX_K, ENGINE_INT8, ENGINE_LUT, ENGINE_POPCOUNT, LUT64_LANES,
                       LUT_LANES, lut_tables)
from .isa import has_vbmi

# engine ids (core/params.h), and their names indexed by id
POPCOUNT, INT8, LUT = ENGINE_POPCOUNT, ENGINE_INT8, ENGINE_LUT
ENGINE_NAMES = tuple(name for _, name in sorted({POPCOUNT: "popcount", INT8: "int8",
                                                 LUT: "lut"}.items()))
ENGINE_POLICIES = ("auto", "popcount", "int8", "lut")

# per rule key (see rule_key): plane pairs up to which popcount is chosen before any other
# engine, and up to which it beats int8 (after the lut engine had its turn)
POPCOUNT_FIRST_PLANE_PAIRS = {"scalar": 4, "avx2": 1, "avx512": 2, "avx512+vbmi": 1}
POPCOUNT_MAX_PLANE_PAIRS = {"scalar": 4, "avx2": 2, "avx512": 4, "avx512+vbmi": 3}
# (K, pairs): an act group of fewer than K positions runs popcount only up to `pairs` pairs
POPCOUNT_SHORT_K = {"avx512+vbmi": (1024, 2)}
# lut engine: most tables per K group, most lookups (bw * tables), and the channel-planes a
# block needs per table^2 to pay for the row tables
LUT_MAX_TABLES = {"avx2": 2, "avx512": 1, "avx512+vbmi": 1}
LUT_MAX_LOOKUPS = {"avx2": 2, "avx512": 1, "avx512+vbmi": 2}
LUT_MIN_PLANES = {"avx2": 32, "avx512": 32, "avx512+vbmi": 256}
# (channels, K): a block of at most this many channels over at most this many K positions
# runs on int8 (rule 0)
SMALL_BLOCK_INT8 = {"avx2": (32, 72)}

DIRECT_CONV_ISAS = ("avx2", "avx512")
INT8_VALUE_WIDTH_ISAS = ("avx2",)


def rule_key(isa: str) -> str:
    """The key of ``isa``'s rule: the ISA, or ``avx512+vbmi`` where the avx512 path's lut
    engine has 64-entry tables."""
    return "avx512+vbmi" if isa == "avx512" and has_vbmi() else isa


def choose_engine(w_bits: int, a_bits: int, policy: str = "auto", isa: str = "scalar",
                  channels: int | None = None, k: int | None = None) -> int:
    """Engine for a (weight width, activation width) block of ``channels`` output channels
    over ``k`` K positions (None: many) under ``policy`` on ``isa`` (the rule in the module
    docstring)."""
    if policy == "popcount":
        return POPCOUNT
    if policy == "int8":
        return INT8
    if policy == "lut":
        return LUT
    key = rule_key(isa)
    small = SMALL_BLOCK_INT8.get(key)
    if small and channels is not None and k is not None and channels <= small[0] \
            and k <= small[1]:
        return INT8
    pairs = w_bits * a_bits
    if pairs <= POPCOUNT_FIRST_PLANE_PAIRS[key]:
        return POPCOUNT
    tables = lut_tables(a_bits)
    if a_bits > 1 and tables <= LUT_MAX_TABLES.get(key, 0) and \
            w_bits * tables <= LUT_MAX_LOOKUPS.get(key, 0) and \
            (channels is None or channels * w_bits >= LUT_MIN_PLANES[key] * tables ** 2):
        return LUT
    limit = POPCOUNT_MAX_PLANE_PAIRS[key]
    if key in POPCOUNT_SHORT_K and k is not None and k < POPCOUNT_SHORT_K[key][0]:
        limit = POPCOUNT_SHORT_K[key][1]
    return POPCOUNT if pairs <= limit else INT8


def lut_lanes(isa: str) -> int:
    """Output channels per vector of the lut engine's weights: 64 on the avx512 path with
    VBMI (64-entry tables of 6 K positions, core/lut_avx512.c), else 16 (16-entry tables of
    4 positions, core/lut.h)."""
    return LUT64_LANES if rule_key(isa) == "avx512+vbmi" else LUT_LANES


def direct_conv(isa: str, policy: str, k: int) -> bool:
    """Whether a stride-1 conv with the requantize fused and K = C kh kw runs as a direct
    convolution instead of a GEMM."""
    return isa in DIRECT_CONV_ISAS and policy == "auto" and 0 < k <= DIRECT_MAX_K


def int8_split_by_value_width(isa: str) -> bool:
    """Whether the int8 columns of an activation group form one block per value width."""
    return isa in INT8_VALUE_WIDTH_ISAS


# The largest K per output at which a layer whose inputs have several widths runs as one
# group at width A (one_width_for_mixed_inputs), per ISA, for convolutions and for linear
# layers; an ISA not listed never does. Figures in that function's docstring.
ONE_WIDTH_MAX_K = {"conv": {"avx2": 1024, "avx512": 1024}, "linear": {"avx512": 768}}


def one_width_for_mixed_inputs(isa: str, policy: str, engines, k: int, conv: bool) -> bool:
    """Whether a layer whose input channels have several widths runs as one activation
    group at the high width ``A`` -- its codes shifted to ``a << (A - a_bits[c])`` first,
    which gives the same accumulator -- instead of one group per width: under policy
    ``auto``, when the per-width plan (``engines``, engine names) already has an int8 block
    and ``k`` (K per output) is at most ``ONE_WIDTH_MAX_K``.

    An int8 pass costs the same at any width, and one pass over all K positions replaces a
    pass per group and engine, each with its own per-output costs (row sums, flush, the
    output) and, for a convolution, its own gathering of the patches. It wins while K is
    short; for long K the cheaper engines of the narrow groups win back their passes.
    Measured on the Zen 4 machine (thread CPU time, best of 5-7, both code paths run on
    it; not yet on an AVX2-only CPU), one group at A / one group per width:

    * convolutions of the Fashion-MNIST ResNet (width 24, batch 256, W1/W4 weights, A2/A8
      inputs, 3x3, K = 216 / 216 / 432 / 864): avx512 20.4 / 54.9, 20.2 / 54.6, 11.7 /
      25.3, 8.5 / 15.1 ms; avx2 24.4 / 60.3, 24.9 / 56.9, 13.6 / 27.0, 11.3 / 16.4 ms;
    * linear, 75 % W1 / 25 % W4 outputs, half A2 / half A8 inputs, M x K x N: avx512
      1024x256x256 0.53 / 0.75, 4096x288x64 0.83 / 1.08, 2048x512x128 0.98 / 1.09,
      3136x576x64 1.02 / 1.03, 1024^3 5.48 / 5.33, 256x1024x1024 1.38 / 1.30, 512x2048x256
      1.48 / 1.25, 64x4096x4096 5.67 / 4.78 ms; avx2 (lut for W1 x A2) 4096x288x64 1.68 /
      1.84, 2048x512x128 2.12 / 1.26, 3136x576x64 1.36 / 1.18, 1024^3 7.68 / 6.48 ms.

    On an AVX2-only CPU (Zen 3, avx2, thread CPU time, best of 5, two training runs sharing
    the machine at low priority), the same ResNet's three residual blocks (two convolutions
    each, the tails fused) with one group / one per width: 47.4 / 116.7, 34.6 / 60.7,
    24.8 / 34.4 ms.
    """
    limit = ONE_WIDTH_MAX_K["conv" if conv else "linear"].get(isa, 0)
    return policy == "auto" and "int8" in engines and 0 < k <= limit
