"""Reference-only properties of the integer core (the contract tests cover all backends)."""

import numpy as np
from hypothesis import given, strategies as st

import independent
import soniq_ref as sq
from soniq_ref.integer_core import _exact_matmul, col2im, exact_float_type
from strategies import linear_case


@given(case=linear_case())
def test_bitserial_identity_equals_direct_sum(case):
    a, a_bits, w, w_bits, hi = case
    assert np.array_equal(sq.linear_int_bitserial(a, a_bits, w, w_bits, hi),
                          independent.linear_acc(a, a_bits, w, w_bits, hi))


def test_float64_matmul_is_exact_at_extreme_magnitudes():
    """Worst case terms (+-255 * 255) over a long K stay exact."""
    k = 70000
    a = np.full((2, k), 255, np.int64)
    q = np.stack([np.full(k, 255), np.full(k, -255)]).astype(np.int64)
    q[1, ::7] = 253
    assert np.array_equal(_exact_matmul(a, q), a @ q.T)


def test_float32_accumulation_is_exact_up_to_its_bound():
    """4-bit weights (|q| <= 15) on A = 8 activations (a' <= 255): float32 while
    K * 15 * 255 <= 2**24; at that K, extreme terms of both signs stay exact."""
    peak = 15 * 255
    k = 2 ** 24 // peak
    assert exact_float_type(k, peak) is np.float32
    assert exact_float_type(k + 1, peak) is np.float64
    assert exact_float_type(2 ** 53 // peak + 1, peak) is None
    a = np.full((3, k), 255, np.uint8)
    a[2, ::3] = 254
    a_bits = np.full(k, 8, np.uint8)
    w = np.stack([np.full(k, 15), np.zeros(k), np.arange(k) % 16]).astype(np.uint8)
    w_bits = np.full(3, 4, np.uint8)
    assert np.array_equal(sq.linear_int(a, a_bits, w, w_bits, 8),
                          independent.linear_acc(a, a_bits, w, w_bits, 8))


@given(seed=st.integers(0, 2 ** 32 - 1), stride=st.integers(1, 2), padding=st.integers(0, 1),
       h=st.integers(3, 8), w=st.integers(3, 8))
def test_col2im_is_the_adjoint_of_im2col(seed, stride, padding, h, w):
    """<im2col(x), c> == <x, col2im(c)> for all x, c: the conv backward is exact."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, h, w))
    cols = sq.im2col(x, 3, 2, stride, padding)
    c = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * c)
    rhs = np.sum(x * col2im(c, x.shape, 3, 2, stride, padding))
    assert abs(lhs - rhs) <= 1e-9 * (1 + abs(lhs))


def test_worked_example_from_the_semantics_page():
    """A 2-bit weight row against 1- and 3-bit activations (A = 3), by hand:

    w codes [0, 3, 1, 2] -> q = 2k - 3 = [-3, 3, -1, 1];
    a codes [1, 5, 0, 7] with bits [1, 3, 1, 3] -> a' = [1<<2, 5, 0, 7] = [4, 5, 0, 7];
    acc = -12 + 15 + 0 + 7 = 10.
    """
    a = np.array([[1, 5, 0, 7]], np.uint8)
    a_bits = np.array([1, 3, 1, 3], np.uint8)
    w = np.array([[0, 3, 1, 2]], np.uint8)
    w_bits = np.array([2], np.uint8)
    assert sq.linear_int(a, a_bits, w, w_bits, 3).tolist() == [[10]]
    assert sq.linear_int_bitserial(a, a_bits, w, w_bits, 3).tolist() == [[10]]
