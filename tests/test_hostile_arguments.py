"""Odd arguments at library level: geometry beyond what the kernels take, zero-size
dimensions, unvalidated quantizer helpers, an absurd thread count. Each is one documented
behaviour on every backend: a named ``ValueError``/``TypeError``, or an empty result."""

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, strategies as st

from soniq_ref import im2col, quantizers
from soniq_ref.layers.pooling import max_pool_codes as ref_max_pool_codes

ONE = np.ones(1, np.uint8)


def _pool(backend):
    return getattr(backend, "max_pool_codes", ref_max_pool_codes)


@pytest.mark.parametrize("stride", [2 ** 31, 2 ** 32 + 1, 2 ** 63, 2 ** 64, 2 ** 100, 0, -1])
def test_geometry_beyond_the_kernels_is_refused(backend, stride):
    x = np.zeros((1, 1, 3, 3), np.uint8)
    w = np.zeros((2, 1, 2, 2), np.uint8)
    with pytest.raises(ValueError, match="stride"):
        backend.conv2d_int(x, ONE, w, np.ones(2, np.uint8), 1, stride=stride)
    with pytest.raises(ValueError, match="stride"):
        _pool(backend)(x, 2, stride)
    with pytest.raises(ValueError, match="padding"):
        backend.conv2d_int(x, ONE, w, np.ones(2, np.uint8), 1, stride=1, padding=2 ** 63)


def test_the_largest_stride_runs_the_same_everywhere(backend):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2, (2, 1, 5, 5)).astype(np.uint8)
    w = rng.integers(0, 2, (3, 1, 2, 2)).astype(np.uint8)
    got = backend.conv2d_int(x, ONE, w, np.ones(3, np.uint8), 1, stride=2 ** 31 - 1)
    q = 2 * w.astype(np.int64) - 1
    want = np.einsum("bchw,ochw->bo", x[:, :, :2, :2].astype(np.int64), q)[:, :, None, None]
    np.testing.assert_array_equal(np.asarray(got), want)
    np.testing.assert_array_equal(_pool(backend)(x, 2, 2 ** 31 - 1), x[:, :, :2, :2].max(
        axis=(2, 3), keepdims=True))


@pytest.mark.parametrize("m, n, k", [(3, 0, 5), (0, 2, 5), (0, 0, 5), (3, 2, 0)])
def test_linear_with_zero_size_dimensions_is_empty(backend, m, n, k):
    a, w = np.zeros((m, k), np.uint8), np.zeros((n, k), np.uint8)
    for weights, bits in ((w, np.ones(n, np.uint8)), (backend.pack_weights(w, np.ones(n, np.uint8)),
                                                       None)):
        got = np.asarray(backend.linear_int(a, np.ones(k, np.uint8), weights, bits, 1))
        assert got.dtype == np.int64 and got.shape == (m, n)
        if got.size:   # K = 0: the empty sum
            assert not got.any()


@pytest.mark.parametrize("b, o", [(2, 0), (0, 3), (0, 0)])
def test_conv_with_zero_size_dimensions_is_empty(backend, b, o):
    x, w = np.zeros((b, 1, 4, 4), np.uint8), np.zeros((o, 1, 2, 2), np.uint8)
    got = np.asarray(backend.conv2d_int(x, ONE, w, np.ones(o, np.uint8), 1))
    assert got.dtype == np.int64 and got.shape == (b, o, 3, 3)


@pytest.mark.parametrize("beta, error", [
    ("1.0", TypeError), (np.array([1.0, 2.0]), TypeError), (None, TypeError), (True, TypeError),
    (1e39, ValueError), (10 ** 400, ValueError), (0, ValueError), (-1.0, ValueError),
    (float("nan"), ValueError), (float("inf"), ValueError), (1e-44, ValueError),
])
def test_quantizer_helpers_refuse_a_bad_beta(beta, error):
    x, bits = np.ones((2, 3), np.float32), np.full(3, 4, np.uint8)
    for call in (lambda: quantizers.quantize_acts(x, bits, beta),
                 lambda: quantizers.act_ratio(beta, bits),
                 lambda: quantizers.act_step(beta, 4)):
        with pytest.raises(error, match="beta"):
            call()


@pytest.mark.parametrize("bits", [0, 9, 65, -1, 255])
def test_quantizer_helpers_refuse_bits_outside_1_to_8(bits):
    codes = np.zeros((2, 3), np.uint8)
    alpha = np.ones(2, np.float32)
    arr = np.full(2, bits % 256, np.uint8)
    with pytest.raises((ValueError, TypeError), match="bits"):
        quantizers.dequantize_weights(codes, alpha, arr)
    with pytest.raises((ValueError, TypeError), match="bits"):
        quantizers.signed_levels(codes, bits)
    with pytest.raises((ValueError, TypeError), match="bits"):
        quantizers.weight_levels(bits)


@given(bits=st.integers(1, 8), code=st.integers(0, 255))
def test_dequantize_weights_refuses_codes_above_the_bits(bits, code):
    codes = np.full((1, 2), code, np.uint8)
    call = lambda: quantizers.dequantize_weights(codes, np.ones(1, np.float32),  # noqa: E731
                                                 np.full(1, bits, np.uint8))
    if code < 1 << bits:
        n = (1 << bits) - 1
        np.testing.assert_array_equal(call(), np.float32(1 / n) * np.float32(2 * code - n))
    else:
        with pytest.raises(ValueError, match="codes"):
            call()


@pytest.mark.parametrize("kw", [dict(stride=0), dict(stride=-1), dict(padding=-1),
                                dict(kh=0), dict(stride=2 ** 63)])
def test_im2col_refuses_bad_geometry(kw):
    args = {**dict(kh=2, kw=2, stride=1, padding=0), **kw}
    with pytest.raises(ValueError, match="|".join(kw)):
        im2col(np.zeros((1, 1, 3, 3), np.uint8), **args)


@pytest.mark.parametrize("value", ["3000000000", "0", "-2", "many", "1025"])
def test_an_absurd_thread_count_is_refused_at_import(value):
    pytest.importorskip("soniq_fast.cpu._kernels")
    env = dict(os.environ, SONIQ_NUM_THREADS=value)
    code = "from soniq_ref import get_backend; get_backend('cpu')"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "SONIQ_NUM_THREADS" in run.stderr.splitlines()[-1]
