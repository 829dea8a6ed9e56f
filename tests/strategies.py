"""Hypothesis strategies for codes, bit widths and shapes.

They lean on the cases kernels get wrong: K around multiples of 64 (word tails),
K = 1, every bit width 1..8 mixed per channel, codes pinned at 0 or at the top.
"""

import numpy as np
from hypothesis import strategies as st

RAGGED_K = st.one_of(st.integers(1, 200), st.sampled_from([63, 64, 65, 127, 128, 129, 255, 257]))


def json_paths(value, prefix=()):
    """Every path into a JSON value (containers and leaves), for edits of file documents."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from json_paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from json_paths(item, prefix + (i,))


@st.composite
def bit_widths(draw, length, hi=8):
    """uint8 [length] widths in 1..hi: uniform, one constant, or a two-level palette."""
    kind = draw(st.sampled_from(["mixed", "constant", "palette"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if kind == "constant":
        return np.full(length, draw(st.integers(1, hi)), np.uint8)
    if kind == "palette":
        lo = draw(st.integers(1, hi))
        top = draw(st.integers(lo, hi))
        return np.where(rng.random(length) < 0.5, lo, top).astype(np.uint8)
    return rng.integers(1, hi + 1, length).astype(np.uint8)


@st.composite
def codes_for(draw, shape, bits, axis):
    """uint8 codes of ``shape`` with channel ``c`` (along ``axis``) below 2**bits[c]."""
    top = ((1 << bits.astype(np.int64)) - 1)
    bshape = [1] * len(shape)
    bshape[axis] = -1
    top = top.reshape(bshape)
    fill = draw(st.sampled_from(["random", "random", "zero", "top", "extremes"]))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    if fill == "zero":
        return np.zeros(shape, np.uint8)
    if fill == "top":
        return np.broadcast_to(top, shape).astype(np.uint8)
    if fill == "extremes":
        return np.where(rng.random(shape) < 0.5, 0, top).astype(np.uint8)
    return np.floor(rng.random(shape) * (top + 1)).astype(np.uint8)


@st.composite
def linear_case(draw, max_m=40, max_n=24):
    """(a_codes, a_bits, w_codes, w_bits, act_bits_hi) for linear_int."""
    m = draw(st.integers(1, max_m))
    k = draw(RAGGED_K)
    n = draw(st.integers(1, max_n))
    hi = draw(st.integers(1, 8))
    a_bits = draw(bit_widths(k, hi))
    w_bits = draw(bit_widths(n))
    a = draw(codes_for((m, k), a_bits, 1))
    w = draw(codes_for((n, k), w_bits, 0))
    return a, a_bits, w, w_bits, hi


@st.composite
def conv_case(draw):
    """(x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride, padding) for conv2d_int."""
    b = draw(st.integers(1, 3))
    c = draw(st.integers(1, 9))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (2, 3), (5, 5), (3, 1)]))
    stride = draw(st.integers(1, 2))
    padding = draw(st.integers(0, min(kh, kw) - 1))
    h = draw(st.integers(max(1, kh - 2 * padding), 11))
    w = draw(st.integers(max(1, kw - 2 * padding), 11))
    o = draw(st.integers(1, 12))
    hi = draw(st.integers(1, 8))
    a_bits = draw(bit_widths(c, hi))
    w_bits = draw(bit_widths(o))
    x = draw(codes_for((b, c, h, w), a_bits, 1))
    wc = draw(codes_for((o, c, kh, kw), w_bits, 0))
    return x, a_bits, wc, w_bits, hi, stride, padding


# (act_bits_hi, largest weight bits) pairs whose live plane counts P = 1, 2, 4, 8 set
# how much of K one staging step of the b1 tensor-core engine spans (32 / P words)
LONG_K_PLANES = [(1, 1), (2, 1), (1, 2), (3, 2), (4, 4), (8, 1), (2, 8)]


def long_k_case(hi, w_top, seed=0):
    """(a, a_bits, w, w_bits, hi) with K over two 2048-position steps plus a ragged tail,
    70 weight rows (two column tiles), mixed widths up to ``hi`` / ``w_top`` (each
    reached), and rows of extreme codes."""
    rng = np.random.default_rng(seed)
    m, k, n = 19, 2 * 2048 + 2 * 64 + 37, 70
    a_bits = rng.integers(1, hi + 1, k).astype(np.uint8)
    w_bits = rng.integers(1, w_top + 1, n).astype(np.uint8)
    a_bits[0], w_bits[0] = hi, w_top
    a_top = (1 << a_bits.astype(np.int64)) - 1
    w_top_codes = ((1 << w_bits.astype(np.int64)) - 1)[:, None]
    a = np.floor(rng.random((m, k)) * (a_top + 1)).astype(np.uint8)
    w = np.floor(rng.random((n, k)) * (w_top_codes + 1)).astype(np.uint8)
    a[0], w[0], w[1] = a_top, np.broadcast_to(w_top_codes[0], k), 0
    return a, a_bits, w, w_bits, hi
