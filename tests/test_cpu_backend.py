"""The cpu backend beyond the shared contract: engines, code paths, threads, K limit, GIL.

The contract tests (test_contract.py) already run every cpu code path, and each engine
forced on it (backend ids ``cpu:<isa>+<engine>``), against the independent
implementation. Here: engines split and forced at the edges of their layouts, results
identical for 1, 2 and 3 threads, the ISA chosen by argument or environment really
being the one that runs, the int32 K limit, the GIL released around the kernels,
packed weights reused, and the message when the extension is not built.
"""

import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, strategies as st

import independent
from backends import load_backend
from random_deploy import random_cnn_deploy
from strategies import conv_case

cpu = pytest.importorskip("soniq_fast.cpu", reason="the cpu extension is not built; "
                          "build it with: pip install -e .")

ISAS = ["scalar", "avx2", "avx512"]
POLICIES = ["popcount", "int8", "lut", "auto"]
ENGINES = ["popcount", "int8", "lut"]


def _backend(isa, policy="auto", threads=1):
    return load_backend(f"cpu:{isa}").with_engine(policy).with_threads(threads)


def _case_arrays(seed, m, k, n, hi):
    rng = np.random.default_rng(seed)
    a_bits = rng.integers(1, hi + 1, k).astype(np.uint8)
    w_bits = rng.integers(1, 9, n).astype(np.uint8)
    a = (rng.random((m, k)) * (2.0 ** a_bits)).astype(np.uint8)
    w = (rng.random((n, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
    return a, a_bits, w, w_bits


# ------------------------------------------------------------------------ engines

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("act_widths", [(2,), (2, 8)], ids=["A2", "A2+A8"])
def test_mixed_palette_picks_engines_and_stays_exact(isa, act_widths):
    # W{1,4} x A2: the W1 block runs on popcount (lut on AVX2: enough channels to pay for
    # its tables), the W4 block on int8. W{1,4} x A{2,8}: the plan per input width has an
    # int8 block; at this K (517) the linear layer keeps it on avx2 and scalar, and runs as
    # one group at A = 8 on int8 on avx512, as does the convolution (K = 54) on avx2 and
    # avx512 (engines.one_width_for_mixed_inputs): the codes shifted first, the same sums.
    rng = np.random.default_rng(7)
    m, k, n = 101, 517, 301
    a_bits = rng.choice(np.array(act_widths, np.uint8), k)
    w_bits = np.where(rng.random(n) < 0.75, 1, 4).astype(np.uint8)
    a = np.where(rng.random((m, k)) < 0.3, (1 << a_bits) - 1,
                 rng.random((m, k)) * (2.0 ** a_bits)).astype(np.uint8)
    w = (rng.random((n, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
    backend = _backend(isa, "auto", 2)
    got = backend.linear_int(a, a_bits, w, w_bits, 8)
    split = ("int8", "lut" if isa == "avx2" else "popcount")
    one = len(act_widths) > 1
    assert backend.last_path == (isa, ("int8",) if one and isa == "avx512" else split)
    np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, 8))
    x = rng.integers(0, 256, (2, 6, 9, 7)).astype(np.uint8)
    x_bits = np.array([act_widths[i % len(act_widths)] for i in range(6)], np.uint8)
    x = np.minimum(x, (1 << x_bits.astype(np.int64))[None, :, None, None] - 1).astype(np.uint8)
    wc = w[:, :6 * 9].reshape(n, 6, 3, 3)
    got = backend.conv2d_int(x, x_bits, wc, w_bits, 8, stride=2, padding=1)
    if one:     # at A = 8 avx2's W1 block is W1 x A8: lut (two nibble tables), not popcount
        assert backend.last_path[1] == {"avx512": ("int8",), "avx2": ("int8", "lut"),
                                        "scalar": split}[isa]
    np.testing.assert_array_equal(got, independent.conv_acc(x, x_bits, wc, w_bits, 8, 2, 1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [67, 1601])
def test_interleaved_weight_widths_are_exact(isa, policy, n):
    # Output channels of two widths interleaved, so each width's block has scattered
    # columns. Up to SONIQ_STAGE_MAX_COLS (core/gemm.c) channels a row tile's sums are
    # staged in block order and copied out row by row; n = 1601 takes the per-element
    # flushes instead. m = 101 ends in a partial row tile; 2 threads share the tiles.
    rng = np.random.default_rng(n)
    m, k = 101, 75
    a_bits = np.where(rng.random(k) < 0.5, 2, 8).astype(np.uint8)
    w_bits = np.where(rng.random(n) < 0.75, 1, 4).astype(np.uint8)
    a = (rng.random((m, k)) * (2.0 ** a_bits)).astype(np.uint8)
    w = (rng.random((n, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
    got = _backend(isa, policy, 2).linear_int(a, a_bits, w, w_bits, 8)
    np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, 8))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("n", [67, 1601])
def test_interleaved_weight_widths_on_conv_are_exact(isa, policy, n):
    # The same for conv2d_int, whose output is channel planes: staged sums are copied out
    # one run of rows per channel. 35 positions per image, so 48-row tiles span images.
    rng = np.random.default_rng(n + 1)
    b, c, h, w_ = 3, 6, 7, 5
    a_bits = np.where(np.arange(c) % 2 == 0, 2, 8).astype(np.uint8)
    w_bits = np.where(rng.random(n) < 0.75, 1, 4).astype(np.uint8)
    x = (rng.random((b, c, h, w_)) * (2.0 ** a_bits[None, :, None, None])).astype(np.uint8)
    w = (rng.random((n, c, 3, 3)) * (2.0 ** w_bits[:, None, None, None])).astype(np.uint8)
    got = _backend(isa, policy, 2).conv2d_int(x, a_bits, w, w_bits, 8, stride=1, padding=1)
    np.testing.assert_array_equal(got, independent.conv_acc(x, a_bits, w, w_bits, 8, 1, 1))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c, period, kh, kw", [
    (6, 2, 3, 3),       # windows of 9 positions, every other channel
    (9, 3, 2, 5),       # windows of 10, every third channel
    (4, 2, 5, 5),       # windows of 25: longer than one 16-byte copy
    (5, 2, 3, 3),       # channels 0, 2, 4 against 1, 3: one group ends the row
    (12, 4, 4, 4),      # windows of 16
])
def test_conv_with_channel_widths_in_a_period_is_exact(isa, c, period, kh, kw):
    # An act group of a conv whose input channels cycle through widths holds runs of kh kw
    # K positions at a constant stride: gathered a run at a time on the vector paths (whole
    # 16- or 8-byte copies where the row has room, the rest byte by byte).
    rng = np.random.default_rng(c * 100 + period * 10 + kh)
    b, h, w_, n = 2, 6, 7, 37
    a_bits = np.array([(2, 8, 5, 3)[i % period] for i in range(c)], np.uint8)
    w_bits = np.where(rng.random(n) < 0.75, 1, 4).astype(np.uint8)
    x = (rng.random((b, c, h, w_)) * (2.0 ** a_bits[None, :, None, None])).astype(np.uint8)
    x[0] = ((1 << a_bits.astype(np.int64)) - 1)[:, None, None]
    w = (rng.random((n, c, kh, kw)) * (2.0 ** w_bits[:, None, None, None])).astype(np.uint8)
    want = independent.conv_acc(x, a_bits, w, w_bits, 8, 1, 1)
    for threads in (1, 2):
        got = _backend(isa, "auto", threads).conv2d_int(x, a_bits, w, w_bits, 8, stride=1,
                                                        padding=1)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("k", [1, 2, 63, 64, 65, 129, 200, 517])
@pytest.mark.parametrize("first", [2, 8])
def test_alternating_activation_widths_are_exact(isa, k, first):
    # Input channels alternating two widths: every act group takes every other K position
    # (gathered 32 at a time on the vector paths, the rest one by one).
    rng = np.random.default_rng(k)
    m, n = 37, 21
    a_bits = np.where(np.arange(k) % 2 == 0, first, 10 - first).astype(np.uint8)
    w_bits = rng.integers(1, 9, n).astype(np.uint8)
    a = (rng.random((m, k)) * (2.0 ** a_bits)).astype(np.uint8)
    w = (rng.random((n, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
    got = _backend(isa, "auto", 2).linear_int(a, a_bits, w, w_bits, 8)
    np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, 8))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [512, 515])
@pytest.mark.parametrize("policy, w_width, a_width", [
    ("popcount", 1, 1), ("popcount", 2, 1), ("popcount", 1, 2),
    ("int8", 1, 8), ("int8", 4, 4), ("int8", 8, 8),
    ("lut", 1, 2), ("lut", 3, 5), ("lut", 2, 8)])
def test_one_act_group_blocks_written_directly_are_exact(isa, n, policy, w_width, a_width):
    # One act group: on AVX2 its blocks store into the output instead of adding to zeroed
    # rows (n = 515 makes most rows start off a 32-byte boundary and leaves a partial
    # vector of channels at the end; 8 x 8 runs the int8 engine's int16-operand path).
    rng = np.random.default_rng(n + w_width)
    m, k = 300, 70
    a = rng.integers(0, 1 << a_width, (m, k), dtype=np.uint8)
    w = rng.integers(0, 1 << w_width, (n, k), dtype=np.uint8)
    a_bits, w_bits = np.full(k, a_width, np.uint8), np.full(n, w_width, np.uint8)
    backend = _backend(isa, policy, 2)
    out = backend.linear_int(a, a_bits, w, w_bits, a_width)
    np.testing.assert_array_equal(out, independent.linear_acc(a, a_bits, w, w_bits, a_width))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("a_width", range(1, 9))
def test_lut_engine_at_the_extremes_of_every_activation_width(isa, a_width):
    # Codes at their maximum fill every table entry and byte sum to its bound (the byte
    # sums of core/lut_avx2.c run as many steps as fit); K = 18721 spans many of its K
    # blocks of 1024 positions, ends in a partial one. Planes 1..3 and a ragged last vector
    # of channels.
    rng = np.random.default_rng(a_width)
    m, n, k = 3, 21, 18721
    a = np.full((m, k), (1 << a_width) - 1, np.uint8)
    a[1] = rng.integers(0, 1 << a_width, k)
    w_bits = np.array([1, 2, 3] * 7, np.uint8)
    w = np.where(rng.random((n, k)) < 0.9, (1 << w_bits[:, None]) - 1,
                 rng.integers(0, 1 << w_bits[:, None], (n, k))).astype(np.uint8)
    w[:3] = ((1 << w_bits[:3]) - 1)[:, None]     # every index 15: each lookup at its maximum
    a_bits = np.full(k, a_width, np.uint8)
    got = _backend(isa, "lut").linear_int(a, a_bits, w, w_bits, a_width)
    np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, a_width))


@pytest.mark.parametrize("isa", ISAS)
@given(data=st.data())
def test_lut_engine_on_any_k_and_rows(isa, data):
    # The AVX-512 lut kernel steps through two pairs of groups (16 K positions) at a time
    # with one table and one pair with two, so K ending in an odd pair, K blocks of 1024 / 512
    # positions and tiles of rows past the register tile are the edges; codes near their
    # maxima fill the byte sums.
    a_width = data.draw(st.integers(1, 8), label="a_width")
    k = data.draw(st.one_of(st.integers(1, 40), st.integers(500, 1100)), label="k")
    m = data.draw(st.integers(1, 60), label="m")
    n = data.draw(st.integers(1, 40), label="n")
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    w_bits = rng.integers(1, 4, n).astype(np.uint8)
    top = (1 << a_width) - 1
    a = np.where(rng.random((m, k)) < 0.7, top, rng.integers(0, top + 1, (m, k))).astype(np.uint8)
    w = (rng.random((n, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
    a_bits = np.full(k, a_width, np.uint8)
    want = independent.linear_acc(a, a_bits, w, w_bits, 8)
    for threads in (1, 2):
        got = _backend(isa, "lut", threads).linear_int(a, a_bits, w, w_bits, 8)
        np.testing.assert_array_equal(got, want)


def test_choose_engine_limits_popcount_by_k_where_measured(monkeypatch):
    # avx512 with VBMI: popcount up to 3 plane pairs, up to 2 in act groups of K < 1024.
    from soniq_fast.cpu import engines
    monkeypatch.setattr(engines, "rule_key", lambda isa: "avx512+vbmi")
    short, pairs = engines.POPCOUNT_SHORT_K["avx512+vbmi"]
    assert (short, pairs) == (1024, 2)
    assert engines.choose_engine(1, 3, "auto", "avx512", 64, short) == engines.POPCOUNT
    assert engines.choose_engine(1, 3, "auto", "avx512", 64, short - 1) == engines.INT8
    assert engines.choose_engine(1, 3, "auto", "avx512", 64, None) == engines.POPCOUNT
    assert engines.choose_engine(2, 2, "auto", "avx512", 64, short) == engines.INT8
    assert engines.choose_engine(1, 2, "auto", "avx512", 64, 9) == engines.POPCOUNT


@pytest.mark.parametrize("policy", ["lut", "auto"])
def test_avx512_without_vbmi_packs_the_16_entry_tables(monkeypatch, policy):
    # An AVX-512 CPU without VBMI has no 64-entry lut kernel: its lut blocks take the
    # 16-entry layout and run the AVX2 kernel. Simulated here by hiding VBMI from the packer.
    from soniq_fast.cpu import engines
    if not cpu.isa.supported("avx512"):
        pytest.skip("this CPU cannot run the avx512 code path")
    monkeypatch.setattr(engines, "has_vbmi", lambda: False)
    assert engines.lut_lanes("avx512") == 16 and engines.rule_key("avx512") == "avx512"
    rng = np.random.default_rng(11)
    m, k, n = 53, 1031, 70      # K above ONE_WIDTH_MAX_K: one act group per width
    a_bits = np.where(np.arange(k) % 3 == 0, 3, 6).astype(np.uint8)
    w_bits = np.where(rng.random(n) < 0.7, 1, 2).astype(np.uint8)
    a = (rng.random((m, k)) * (2.0 ** a_bits)).astype(np.uint8)
    w = (rng.random((n, k)) * (2.0 ** w_bits[:, None])).astype(np.uint8)
    backend = _backend("avx512", policy, 2)
    packed = backend.pack_weights(w, w_bits)
    got = backend.linear_int(a, a_bits, packed, None, 8)
    assert "lut" in backend.last_path[1]
    assert all(b.lanes == 16 for b in packed.plan(a_bits, 8, policy, "avx512").blocks
               if b.engine == engines.LUT)
    np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, 8))


# Engine per (weight width, activation width) under the auto policy, per rule key of
# soniq_fast/cpu/engines.py (which gives the rule and the figures behind it), for blocks of
# 64 and 512 channels: the lut engine's tables need channels enough to pay for them.
AUTO_ENGINES = {
    ("scalar", 64): {(1, 1): "popcount", (1, 4): "popcount", (2, 2): "popcount",
                     (1, 5): "int8", (3, 2): "int8"},
    ("avx2", 64): {(1, 1): "popcount", (2, 1): "popcount", (1, 2): "lut", (2, 2): "lut",
                   (1, 4): "lut", (2, 4): "lut", (1, 8): "int8", (3, 2): "int8",
                   (4, 1): "int8"},
    ("avx2", 512): {(1, 8): "lut", (2, 8): "int8"},
    ("avx512", 64): {(1, 1): "popcount", (1, 2): "popcount", (2, 1): "popcount",
                     (1, 3): "lut", (1, 4): "lut", (2, 2): "popcount", (4, 1): "popcount",
                     (1, 5): "int8", (2, 3): "int8", (8, 8): "int8"},
    ("avx512+vbmi", 64): {(1, 1): "popcount", (1, 2): "popcount", (2, 1): "popcount",
                          (1, 3): "int8", (1, 4): "int8", (2, 2): "int8", (4, 1): "int8",
                          (2, 3): "int8", (1, 8): "int8"},
    ("avx512+vbmi", 512): {(1, 1): "popcount", (1, 2): "lut", (1, 4): "lut", (2, 2): "lut",
                           (2, 4): "lut", (1, 5): "int8", (1, 8): "int8", (3, 2): "int8"},
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("n", [64, 512])
def test_auto_engine_per_width_pair_follows_the_measured_rule(isa, n):
    # K = 100: on the avx512 path with VBMI, short K limits popcount to 2 plane pairs.
    from soniq_fast.cpu.engines import rule_key
    if not cpu.isa.supported(isa):
        pytest.skip(f"this CPU cannot run the {isa} code path")
    expected = AUTO_ENGINES.get((rule_key(isa), n), {})
    rng = np.random.default_rng(3)
    m, k = 5, 100
    for (bw, ba), engine in expected.items():
        a_bits = np.full(k, ba, np.uint8)
        w_bits = np.full(n, bw, np.uint8)
        a = rng.integers(0, 1 << ba, (m, k)).astype(np.uint8)
        w = rng.integers(0, 1 << bw, (n, k)).astype(np.uint8)
        backend = _backend(isa)
        got = backend.linear_int(a, a_bits, w, w_bits, ba)
        assert backend.last_path == (isa, (engine,)), (bw, ba)
        np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, ba))


@pytest.mark.parametrize("isa", ISAS)
def test_int8_engine_at_the_extremes_of_every_width_pair(isa):
    # a' at its maximum against v = w - 2^(bw-1) at both ends, K long enough for several
    # int16 runs of the AVX2 kernel (packed.int8_steps per width pair): its int16 partial
    # sums must neither saturate nor wrap. Ragged rows and columns reach every tile shape.
    from soniq_fast.cpu.packed import int8_steps
    backend = _backend(isa, "int8")
    m, n = 13, 19
    for hi in range(1, 9):
        for ba in range(1, hi + 1):
            for bw in range(1, 9):
                steps = int8_steps(bw, ba, hi - ba)
                k = min(4 * 2 * (steps + 1) + 3, cpu.backend.MAX_EXACT_K)
                a = np.full((m, k), (1 << ba) - 1, np.uint8)
                a[-1, ::3] = 0
                w = np.zeros((n, k), np.uint8)
                w[1::2] = (1 << bw) - 1
                a_bits, w_bits = np.full(k, ba, np.uint8), np.full(n, bw, np.uint8)
                got = backend.linear_int(a, a_bits, w, w_bits, hi)
                np.testing.assert_array_equal(
                    got, independent.linear_acc(a, a_bits, w, w_bits, hi), f"{hi} {ba} {bw}")


@pytest.mark.parametrize("isa", ISAS)
def test_int8_engine_on_values_narrower_than_their_width(isa):
    # 8-bit weights whose values v span only e < 8 signed bits (both ends reached): the AVX2
    # path puts them in a block by e with longer int16 runs; columns of every e side by side.
    from soniq_fast.cpu.packed import int8_steps
    backend = _backend(isa, "int8")
    m, n = 11, 7 * 4
    for hi, ba in [(8, 8), (8, 2), (4, 4), (2, 1)]:
        steps = int8_steps(1, ba, hi - ba)
        k = min(4 * 2 * (steps + 1) + 3, 4000)
        a = np.full((m, k), (1 << ba) - 1, np.uint8)
        a[-1, ::5] = 0
        w = np.zeros((n, k), np.uint8)
        for e in range(1, 8):
            lo, top = 128 - (1 << (e - 1)), 128 + (1 << (e - 1)) - 1
            w[4 * (e - 1):4 * e] = [[lo], [top], [lo], [top]]
            w[4 * (e - 1) + 2, ::3] = top      # both ends in one column
        a_bits, w_bits = np.full(k, ba, np.uint8), np.full(n, 8, np.uint8)
        got = backend.linear_int(a, a_bits, w, w_bits, hi)
        np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, hi))


# ------------------------------------------------------------------------ threads

@pytest.mark.parametrize("isa", ISAS)
@given(seed=st.integers(0, 2 ** 32 - 1), m=st.integers(1, 230), k=st.integers(1, 300),
       n=st.integers(1, 40), hi=st.integers(1, 8), policy=st.sampled_from(POLICIES))
def test_linear_same_for_1_2_3_threads(isa, seed, m, k, n, hi, policy):
    a, a_bits, w, w_bits = _case_arrays(seed, m, k, n, hi)
    results = [_backend(isa, policy, t).linear_int(a, a_bits, w, w_bits, hi) for t in (1, 2, 3)]
    want = independent.linear_acc(a, a_bits, w, w_bits, hi)
    for got in results:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
@given(case=conv_case(), policy=st.sampled_from(POLICIES))
def test_conv_and_requantize_same_for_1_2_3_threads(isa, case, policy):
    x, a_bits, w, w_bits, hi, stride, padding = case
    accs = [_backend(isa, policy, t).conv2d_int(x, a_bits, w, w_bits, hi, stride=stride,
                                                padding=padding) for t in (1, 2, 3)]
    np.testing.assert_array_equal(accs[1], accs[0])
    np.testing.assert_array_equal(accs[2], accs[0])
    o = w.shape[0]
    scale, bias = np.full(o, 0.013, np.float32), np.linspace(-1, 1, o).astype(np.float32)
    bits, ratio = np.full(o, 4, np.uint8), np.full(o, 1.7, np.float32)
    codes = [_backend(isa, policy, t).requantize(accs[0], scale, bias, bits, ratio)
             for t in (1, 2, 3)]
    want = independent.requantize(accs[0], scale, bias, bits, ratio)
    for got in codes:
        np.testing.assert_array_equal(got, want)


def test_thread_count_setting_is_validated():
    backend = cpu.CpuBackend("scalar", 1)
    backend.set_num_threads(3)
    assert backend.num_threads == 3
    with pytest.raises(ValueError, match="num_threads"):
        backend.set_num_threads(0)
    with pytest.raises(TypeError, match="num_threads"):
        cpu.CpuBackend("scalar", 2.0)


# -------------------------------------------------------------------- ISA selection

@pytest.mark.parametrize("isa", ISAS)
def test_variant_runs_that_code_path(isa):
    backend = _backend(isa, "auto", 2)
    a, a_bits, w, w_bits = _case_arrays(3, 50, 130, 9, 8)
    before = cpu.engine_calls()
    backend.linear_int(a, a_bits, w, w_bits, 8)
    after = cpu.engine_calls()
    ran = {key for key in after if after[key] > before[key]}
    assert ran and {path for path, _ in ran} == {isa}
    assert backend.last_path[0] == isa


def _run_python(code, **env):
    full_env = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=120)


def test_environment_selects_isa_and_threads():
    code = ("import numpy as np, soniq_fast.cpu as c\n"
            "b = c.BACKEND\n"
            "a = np.ones((60, 100), np.uint8); w = np.ones((5, 100), np.uint8)\n"
            "b.linear_int(a, np.full(100, 1, np.uint8), w, np.full(5, 1, np.uint8), 1)\n"
            "ran = sorted({p for (p, e), n in c.engine_calls().items() if n})\n"
            "print(b.isa, b.num_threads, ','.join(ran))\n")
    out = _run_python(code, SONIQ_CPU_ISA="scalar", SONIQ_NUM_THREADS="3")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["scalar", "3", "scalar"]


def test_environment_rejects_unknown_isa():
    out = _run_python("import soniq_fast.cpu", SONIQ_CPU_ISA="sse9")
    assert out.returncode != 0
    assert "SONIQ_CPU_ISA" in out.stderr


def test_unsupported_variant_says_why():
    backend = cpu.BACKEND
    with pytest.raises(ValueError, match="variant"):
        backend.variant("neon")
    missing = [name for name in ISAS if not cpu.isa.supported(name)]
    for name in missing:
        with pytest.raises(RuntimeError, match="cannot run"):
            backend.variant(name)


# ------------------------------------------------------------------------- K limit

def test_constants_of_the_c_kernels_equal_their_mirrors():
    """The C headers define the kernels' constants once; Python reads them from the
    extension. The one mirror that must work without the extension, the int32 K limit of
    the reference (the cuda backend's and the ONNX export's limit), equals the C one."""
    from soniq_fast.cpu import _kernels
    from soniq_fast.cuda.backend import CudaKernels
    from soniq_ref import onnx_export
    from soniq_ref.contract import INT32_EXACT_K
    assert _kernels.MAX_EXACT_K == INT32_EXACT_K == CudaKernels.max_k == onnx_export.MAX_K
    assert cpu.backend.CpuKernels.max_k == _kernels.MAX_EXACT_K
    assert INT32_EXACT_K * 255 * 255 < 2 ** 31 <= (INT32_EXACT_K + 1) * 255 * 255


def test_ids_python_indexes_by_are_those_of_the_c_kernels():
    """Code paths and engines are named in Python and numbered in core/params.h: the names
    are indexed by the C ids (which params.h asserts are 0, 1, 2)."""
    from soniq_fast.cpu import _kernels, engines
    from soniq_fast.cpu.isa import ISA_NAMES
    assert [ISA_NAMES[_kernels.ISA_SCALAR], ISA_NAMES[_kernels.ISA_AVX2],
            ISA_NAMES[_kernels.ISA_AVX512]] == ["scalar", "avx2", "avx512"]
    assert [engines.ENGINE_NAMES[_kernels.ENGINE_POPCOUNT],
            engines.ENGINE_NAMES[_kernels.ENGINE_INT8],
            engines.ENGINE_NAMES[_kernels.ENGINE_LUT]] == ["popcount", "int8", "lut"]


def test_gemm_records_are_named_and_frozen():
    """What crosses into the kernels is named records (records.py), never tuples."""
    import dataclasses
    from soniq_fast.cpu.records import ActGroupRecord, Block
    a, a_bits, w, w_bits = _case_arrays(5, 30, 200, 12, 4)
    packed = cpu.BACKEND.pack_weights(w, w_bits)
    plan = packed.plan(a_bits, 4, "auto", cpu.BACKEND.isa)
    assert plan.groups and all(isinstance(g, ActGroupRecord) for g in plan.groups)
    assert plan.blocks and all(isinstance(b, Block) for b in plan.blocks)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.blocks[0].n = 0


def test_k_at_the_int32_limit_is_exact_and_beyond_is_refused():
    k = cpu.backend.MAX_EXACT_K
    a = np.full((2, k), 255, np.uint8)
    a_bits = np.full(k, 8, np.uint8)
    w = np.stack([np.zeros(k, np.uint8), np.full(k, 255, np.uint8)])
    w_bits = np.full(2, 8, np.uint8)
    for policy in ENGINES:
        got = cpu.BACKEND.with_engine(policy).linear_int(a, a_bits, w, w_bits, 8)
        np.testing.assert_array_equal(got, np.array([[-255 * 255 * k, 255 * 255 * k]] * 2))
    with pytest.raises(ValueError, match="K"):
        cpu.BACKEND.linear_int(np.zeros((1, k + 1), np.uint8), np.ones(k + 1, np.uint8),
                               np.zeros((1, k + 1), np.uint8), np.ones(1, np.uint8), 1)


# ----------------------------------------------------------------------------- GIL

def test_kernel_releases_the_gil():
    a, a_bits, w, w_bits = _case_arrays(11, 400, 4000, 256, 8)
    backend = cpu.CpuBackend("scalar", 1, "popcount")
    window = {}

    def call():
        window["start"] = time.perf_counter()
        backend.linear_int(a, a_bits, w, w_bits, 8)
        window["end"] = time.perf_counter()

    worker = threading.Thread(target=call)
    ticks = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
    worker.join()
    start, end = window["start"], window["end"]
    inside = [t for t in ticks if start + 0.25 * (end - start) < t < end - 0.1 * (end - start)]
    assert end - start > 0.05, "the call is too short to tell"
    assert len(inside) > 100, f"main thread ran {len(inside)} times during the kernel"


# -------------------------------------------------------------------- packed weights

def test_packed_weights_are_reused_across_calls():
    a, a_bits, w, w_bits = _case_arrays(5, 30, 200, 12, 4)
    backend = cpu.BACKEND.with_threads(2)
    packed = backend.pack_weights(w, w_bits)
    first = backend.linear_int(a, a_bits, packed, None, 4)
    plan = packed.plan(a_bits, 4, "auto", backend.isa)
    second = backend.linear_int(a[::-1].copy(), a_bits, packed, None, 4)
    assert packed.plan(a_bits, 4, "auto", backend.isa) is plan, \
        "blocks were rebuilt for the same activation layout"
    np.testing.assert_array_equal(first, independent.linear_acc(a, a_bits, w, w_bits, 4))
    np.testing.assert_array_equal(second, first[::-1])
    np.testing.assert_array_equal(packed.codes(), w)
    with pytest.raises(ValueError, match="w_bits"):
        backend.linear_int(a, a_bits, packed, np.full(12, 8, np.uint8), 4)


# ------------------------------------------------------------------ missing extension

def test_missing_extension_says_how_to_build():
    code = ("import sys\n"
            "sys.modules['soniq_fast.cpu._kernels'] = None\n"
            "import soniq_ref\n"
            "try:\n"
            "    soniq_ref.get_backend('cpu')\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    out = _run_python(code)
    assert out.returncode == 0, out.stderr
    assert "pip install -e ." in out.stdout


# ------------------------------------------------------------------------ end to end

def _random_cnn_deploy(seed):
    """A small random CNN (odd input size, random palettes, bits and BN) as a DeployModel."""
    return random_cnn_deploy(seed, (3, 11, 9), 5, (6, 10), (2, 8), 16)


@pytest.mark.parametrize("isa", ISAS)
def test_random_cnn_deploy_logits_identical_to_ref(isa):
    deploy, x = _random_cnn_deploy(3)
    want = deploy.forward(x, backend="ref")
    for threads in (1, 2):
        got = deploy.forward(x, backend=_backend(isa, "auto", threads))
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
@given(seed=st.integers(0, 2 ** 32 - 1))
def test_one_packed_object_serves_every_input_layout(isa, seed):
    """A layer packs its weights once and its set-up per input layout is cached with them
    (plan, one-width shift, direct weights): calls alternating between input widths, high
    widths, strides and linear/conv use on one packed object each give the exact result."""
    rng = np.random.default_rng(seed)
    backend = _backend(isa)
    o, c = int(rng.integers(1, 20)), int(rng.integers(1, 6))
    w_bits = rng.integers(1, 9, o).astype(np.uint8)
    w = (rng.random((o, c, 3, 3)) * (1 << w_bits.astype(np.int64))[:, None, None, None])
    w = w.astype(np.uint8)
    packed = backend.pack_weights(w, w_bits)
    flat = backend.pack_weights(w.reshape(o, -1), w_bits)
    for _ in range(6):
        hi = int(rng.integers(1, 9))
        a_bits = rng.integers(1, hi + 1, c).astype(np.uint8)
        top = (1 << a_bits.astype(np.int64))[None, :, None, None]
        x = (rng.random((2, c, 7, 6)) * top).astype(np.uint8)
        stride = int(rng.integers(1, 3))
        got = backend.conv2d_int(x, a_bits, packed, w_bits, hi, stride=stride, padding=1)
        np.testing.assert_array_equal(
            got, independent.conv_acc(x, a_bits, w, w_bits, hi, stride, 1))
        k_bits = np.repeat(a_bits, 9)
        a = (rng.random((5, c * 9)) * (1 << k_bits.astype(np.int64))[None, :]).astype(np.uint8)
        np.testing.assert_array_equal(backend.linear_int(a, k_bits, flat, w_bits, hi),
                                      independent.linear_acc(a, k_bits, w.reshape(o, -1),
                                                             w_bits, hi))
