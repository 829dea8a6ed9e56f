"""Quantizers and bit packing of the reference (docs/semantics.md)."""

import numpy as np
from hypothesis import given, strategies as st

import soniq_ref as sq
from soniq_ref.bitpack import code_planes, words_for
from strategies import RAGGED_K, bit_widths, codes_for

SEEDS = st.integers(0, 2 ** 32 - 1)


@st.composite
def weight_case(draw):
    n, k = draw(st.integers(1, 12)), draw(RAGGED_K)
    rng = np.random.default_rng(draw(SEEDS))
    bits = draw(bit_widths(n))
    alpha = rng.uniform(0.01, 3.0, n).astype(np.float32)
    w = (rng.standard_normal((n, k)) * alpha[:, None] * draw(st.sampled_from([0.3, 1, 4]))
         ).astype(np.float32)
    return w, alpha, bits


@given(case=weight_case())
def test_weight_codes_in_range(case):
    w, alpha, bits = case
    k = sq.quantize_weights(w, alpha, bits)
    assert k.dtype == np.uint8
    assert np.all(k.astype(int) <= (2 ** bits.astype(int) - 1)[:, None])


@given(case=weight_case())
def test_weight_grid_values_round_trip(case):
    """dequantize(quantize(v)) == v for every value v that lies on the grid."""
    w, alpha, bits = case
    codes = sq.quantize_weights(w, alpha, bits)
    grid = sq.dequantize_weights(codes, alpha, bits)
    assert np.array_equal(sq.quantize_weights(grid, alpha, bits), codes)
    assert np.array_equal(sq.dequantize_weights(sq.quantize_weights(grid, alpha, bits), alpha,
                                                bits), grid)


@given(case=weight_case())
def test_weight_quantizer_is_monotone(case):
    w, alpha, bits = case
    order = np.argsort(w, axis=1, kind="stable")
    codes = np.take_along_axis(sq.quantize_weights(w, alpha, bits), order, axis=1)
    assert np.all(np.diff(codes.astype(int), axis=1) >= 0)


def test_weight_levels_are_odd_and_symmetric():
    for b in range(1, 9):
        n = 2 ** b - 1
        codes = np.arange(n + 1, dtype=np.uint8)[None, :]
        q = sq.signed_levels(codes, np.array([b], np.uint8))[0]
        assert np.array_equal(q, np.arange(-n, n + 1, 2))
    one_bit = sq.dequantize_weights(np.array([[0, 1]], np.uint8), np.array([0.5], np.float32),
                                    np.array([1], np.uint8))
    assert np.array_equal(one_bit, np.array([[-0.5, 0.5]], np.float32))


@st.composite
def act_case(draw):
    m, c = draw(st.integers(1, 20)), draw(st.integers(1, 70))
    hi = draw(st.integers(1, 8))
    bits = draw(bit_widths(c, hi))
    rng = np.random.default_rng(draw(SEEDS))
    beta = np.float32(rng.uniform(0.1, 6.0))
    x = (rng.standard_normal((m, c)) * beta).astype(np.float32)
    return x, bits, beta, hi


@given(case=act_case())
def test_act_codes_in_range_and_monotone(case):
    x, bits, beta, _ = case
    k = sq.quantize_acts(x, bits, beta)
    assert np.all(k.astype(int) <= (2 ** bits.astype(int) - 1)[None, :])
    order = np.argsort(x, axis=0, kind="stable")
    assert np.all(np.diff(np.take_along_axis(k, order, axis=0).astype(int), axis=0) >= 0)


@given(case=act_case())
def test_act_grid_values_round_trip(case):
    x, bits, beta, hi = case
    codes = sq.quantize_acts(x, bits, beta)
    grid = sq.dequantize_acts(codes, bits, beta, hi)
    assert np.array_equal(sq.quantize_acts(grid, bits, beta), codes)


def test_act_nested_grid():
    """A 2-bit channel of an A = 4 layer is the 4-bit grid with its low 2 planes absent."""
    beta = np.float32(1.0)
    codes = np.array([[0, 1, 2, 3]], np.uint8).T          # 4 samples, one channel
    vals = sq.dequantize_acts(codes, np.array([2], np.uint8), beta, 4)
    assert np.array_equal(vals[:, 0], np.float32([0, 4, 8, 12]) / np.float32(16))
    assert sq.quantize_acts(np.zeros((1, 1), np.float32), np.array([3], np.uint8), beta)[0, 0] == 0


@given(case=weight_case())
def test_weight_bit_planes_reproduce_levels(case):
    """q = sum_j 2**j (2 t_j - 1) over the channel's own planes."""
    w, alpha, bits = case
    codes = sq.quantize_weights(w, alpha, bits)
    planes = code_planes(codes, 8).astype(np.int64)            # [N, 8, K]
    used = (np.arange(8)[None, :] < bits[:, None]).astype(np.int64)
    q = ((2 * planes - 1) * used[:, :, None] * (2 ** np.arange(8))[None, :, None]).sum(axis=1)
    assert np.array_equal(q, sq.signed_levels(codes, bits))


@given(k=RAGGED_K, seed=SEEDS, rows=st.integers(1, 5))
def test_pack_bits_round_trip_and_zero_tail(k, seed, rows):
    plane = np.random.default_rng(seed).integers(0, 2, (rows, k)).astype(np.uint8)
    words = sq.pack_bits(plane)
    assert words.dtype == np.uint64 and words.shape == (rows, words_for(k))
    assert np.array_equal(sq.unpack_bits(words, k), plane)
    tail = words_for(k) * 64 - k
    if tail:
        assert np.all(words[:, -1] >> np.uint64(64 - tail) == 0)
    assert np.array_equal(sq.popcount(words).sum(axis=1), plane.sum(axis=1))


def test_pack_bits_layout_is_lsb_first():
    plane = np.zeros(70, np.uint8)
    plane[[0, 5, 64, 69]] = 1
    words = sq.pack_bits(plane)
    assert words.tolist() == [(1 << 0) | (1 << 5), (1 << 0) | (1 << 5)]


@given(n=st.integers(1, 6), k=RAGGED_K, data=st.data())
def test_packed_weights_round_trip(n, k, data):
    bits = data.draw(bit_widths(n))
    codes = data.draw(codes_for((n, k), bits, 0))
    packed = sq.pack_weights(codes, bits)
    assert np.array_equal(packed.codes(), codes)
    assert packed.planes.shape == (n, 8, words_for(k))
    assert all(not packed.planes[o, bits[o]:].any() for o in range(n))


def test_popcount_without_numpy_bitwise_count(monkeypatch):
    """NumPy 1.26 has no ``np.bitwise_count``; the byte-table path gives the same counts."""
    words = np.random.default_rng(0).integers(0, 2**63, (3, 5), dtype=np.uint64)
    words[0, 0] = np.uint64(2**64 - 1)
    expected = np.array([[bin(int(v)).count("1") for v in row] for row in words])
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    assert np.array_equal(sq.popcount(words), expected)
