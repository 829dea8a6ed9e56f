"""The cpu backend's deploy-model paths beyond the contract, bit for bit against the reference
on every code path and thread count: max pooling of codes in C, the GEMM with requantize fused
(per channel and per position), the unchecked entries DeployModel.forward uses and when it
may use them, and the int32 conversion guard of the vector epilogue.
"""

import copy

import numpy as np
import pytest
from hypothesis import given, strategies as st

import independent
from backends import load_backend
from random_deploy import random_cnn_deploy
from strategies import bit_widths, codes_for, conv_case, linear_case
from soniq_ref.layers.pooling import max_pool_codes

cpu = pytest.importorskip("soniq_fast.cpu", reason="the cpu extension is not built; "
                          "build it with: pip install -e .")

ISAS = ["scalar", "avx2", "avx512"]
THREADS = (1, 2, 3)
POLICIES = ["auto", "popcount", "int8", "lut"]


def _backend(isa, threads=1, policy="auto"):
    return load_backend(f"cpu:{isa}").with_threads(threads).with_engine(policy)


@pytest.fixture(autouse=True)
def _threads_on_small_work(monkeypatch):
    """The unchecked entries start threads only for large work; here every size uses them."""
    from soniq_fast.cpu.backend import CpuKernels
    monkeypatch.setattr(CpuKernels, "work_per_thread", 1)


# ------------------------------------------------------------------------ pooling

@st.composite
def pool_case(draw):
    """Codes [B, C, H, W] (sometimes a non-contiguous view), kernel, stride; 2x2/2 often, with
    widths reaching the 16-, 8- and 4-output steps and the single-output tail."""
    kernel, stride = draw(st.sampled_from([(2, 2), (2, 2), (1, 1), (3, 3), (3, 2), (2, 3),
                                           (4, 1)]))
    b, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    h, w = draw(st.integers(kernel, 12)), draw(st.integers(kernel, 75))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.integers(0, 256, (b, c, h, w), dtype=np.uint8)
    if draw(st.booleans()):
        x = np.swapaxes(rng.integers(0, 256, (b, c, w, h), dtype=np.uint8), 2, 3)
    return x, kernel, stride


@pytest.mark.parametrize("isa", ISAS)
@given(case=pool_case())
def test_max_pool_codes_equals_the_reference(isa, case):
    x, kernel, stride = case
    want = max_pool_codes(x, kernel, stride)
    for threads in THREADS:
        backend = _backend(isa, threads)
        for got in (backend.max_pool_codes(x, kernel, stride),
                    backend.kernels.max_pool_codes(np.ascontiguousarray(x), kernel, stride)):
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(3, 5, 8, 8), (2, 3, 4, 4), (1, 7, 6, 4), (2, 2, 7, 8),
                                   (1, 1, 2, 4), (3, 3, 9, 4), (1, 3, 8, 9)])
def test_max_pool_2x2_of_narrow_rows(isa, shape):
    """Widths 8 and 4 with an even height take several output rows per vector."""
    x = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    want = max_pool_codes(x, 2, 2)
    for threads in THREADS:
        np.testing.assert_array_equal(_backend(isa, threads).kernels.max_pool_codes(x, 2, 2),
                                      want)


@pytest.mark.parametrize("isa", ISAS)
def test_max_pool_codes_refuses_what_the_reference_refuses(isa):
    backend = _backend(isa)
    for bad, error in [(np.zeros((1, 1, 4, 4), np.int64), TypeError),
                       (np.zeros((1, 4, 4), np.uint8), ValueError),
                       (np.zeros((1, 1, 1, 4), np.uint8), ValueError)]:
        with pytest.raises(error) as ours:
            backend.max_pool_codes(bad, 2)
        with pytest.raises(error) as ref:
            max_pool_codes(bad, 2)
        assert str(ours.value) == str(ref.value)


# ------------------------------------------------------------------- fused requantize

@st.composite
def wide_conv_case(draw):
    """conv_case, or one with a kernel wider than 8 (the im2col copy of any width)."""
    if draw(st.booleans()):
        return draw(conv_case())
    b, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 6))
    kh, kw = draw(st.integers(1, 2)), draw(st.integers(9, 11))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, kh - 1))
    h, w = draw(st.integers(kh, 6)), draw(st.integers(kw, 14))
    hi = draw(st.integers(1, 8))
    a_bits, w_bits = draw(bit_widths(c, hi)), draw(bit_widths(o))
    x = draw(codes_for((b, c, h, w), a_bits, 1))
    wc = draw(codes_for((o, c, kh, kw), w_bits, 0))
    return x, a_bits, wc, w_bits, hi, stride, padding


def _requant_params(draw, length, o):
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    scale = (rng.standard_normal(o) * 10.0 ** rng.integers(-4, 0, o)).astype(np.float32)
    bias = (rng.standard_normal(o) * 4).astype(np.float32)
    bits = draw(bit_widths(length))
    ratio = (2.0 ** bits / rng.uniform(0.05, 8.0, length)).astype(np.float32)
    return scale, bias, bits, ratio


@pytest.mark.parametrize("isa", ISAS)
def test_fused_conv_requantize_with_blocks_out_of_buffer_order(isa):
    # Three act groups (A = 3, widths 3, 2, 2, 1) and weights of widths 1..8: the fused tile
    # buffer orders channels by the first group's blocks, so the later groups' blocks see
    # their channels out of order -- including 8 whose first and last are 7 apart without
    # being consecutive. (Found by the long Hypothesis profile.)
    x = np.array([[[[5, 2]], [[0, 0]], [[3, 3]], [[1, 1]]]], np.uint8)
    a_bits = np.array([3, 2, 2, 1], np.uint8)
    w = np.array([[1, 0, 0, 0], [208, 233, 155, 186], [2, 3, 3, 0], [13, 0, 11, 2],
                  [55, 34, 19, 27], [7, 31, 171, 165], [9, 6, 15, 15], [87, 83, 88, 49]],
                 np.uint8).reshape(8, 4, 1, 1)
    w_bits = np.array([1, 8, 2, 4, 6, 8, 4, 7], np.uint8)
    acc = independent.conv_acc(x, a_bits, w, w_bits, 3, 1, 0)
    scale = np.full(8, 1 / 16, np.float32)
    bias, ratio = np.full(8, 128, np.float32), np.ones(8, np.float32)
    bits = np.full(8, 8, np.uint8)
    want = independent.requantize(acc, scale, bias, bits, ratio)
    for threads in THREADS:
        backend = _backend(isa, threads)
        got = backend.kernels.conv2d_requantize(x, a_bits, backend.pack_weights(w, w_bits), 3,
                                                1, 0, scale, bias, bits, ratio)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("isa", ISAS)
@given(case=wide_conv_case(), data=st.data())
def test_fused_conv_requantize_equals_conv_then_requantize(isa, case, data):
    x, a_bits, w, w_bits, hi, stride, padding = case
    policy = data.draw(st.sampled_from(POLICIES), label="engine policy")
    acc = independent.conv_acc(x, a_bits, w, w_bits, hi, stride, padding)
    b, o, ho, wo = acc.shape
    per_position = data.draw(st.booleans())
    length = o * ho * wo if per_position else o
    scale, bias, bits, ratio = _requant_params(data.draw, length, o)
    if per_position:      # the deploy model's per-feature requantize, spelled out
        want = independent.requantize(acc.reshape(b, -1), np.repeat(scale, ho * wo),
                                      np.repeat(bias, ho * wo), bits, ratio).reshape(acc.shape)
    else:
        want = independent.requantize(acc, scale, bias, bits, ratio)
    for threads in THREADS:
        backend = _backend(isa, threads, policy)
        kernels, packed = backend.kernels, backend.pack_weights(w, w_bits)
        got = kernels.conv2d_requantize(x, a_bits, packed, hi, stride, padding, scale, bias,
                                        bits, ratio)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(
            kernels.conv2d_int(x, a_bits, packed, None, hi, stride, padding), acc)


@pytest.mark.parametrize("isa", ISAS)
@given(case=linear_case(), data=st.data())
def test_fused_linear_requantize_equals_linear_then_requantize(isa, case, data):
    a, a_bits, w, w_bits, hi = case
    policy = data.draw(st.sampled_from(POLICIES), label="engine policy")
    acc = independent.linear_acc(a, a_bits, w, w_bits, hi)
    scale, bias, bits, ratio = _requant_params(data.draw, w.shape[0], w.shape[0])
    want = independent.requantize(acc, scale, bias, bits, ratio)
    for threads in THREADS:
        backend = _backend(isa, threads, policy)
        kernels, packed = backend.kernels, backend.pack_weights(w, w_bits)
        got = kernels.linear_requantize(a, a_bits, packed, hi, scale, bias, bits, ratio)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(kernels.linear_int(a, a_bits, packed, None, hi), acc)


@pytest.mark.parametrize("isa", ISAS)
def test_fused_requantize_at_the_largest_exact_sums(isa):
    """K = 33021 (just under the limit), every code and weight extreme: sums near +-2^31."""
    c = 3669                                       # K = c * 3 * 3
    x = np.full((1, c, 4, 4), 255, np.uint8)
    w = np.zeros((3, c, 3, 3), np.uint8)
    w[0], w[2, ::2] = 255, 255                     # +K*255^2, -K*255^2, about 0
    w_bits, a_bits = np.full(3, 8, np.uint8), np.full(c, 8, np.uint8)
    acc = independent.conv_acc(x, a_bits, w, w_bits, 8, 1, 1)
    assert np.abs(acc).max() > 2 ** 31 - 2 ** 25
    scale = np.array([2.0 ** -24, 2.0 ** -24, 0.75], np.float32)
    bias = np.array([-100.0, 200.0, 0.5], np.float32)
    bits, ratio = np.array([8, 8, 4], np.uint8), np.array([1.0, 1.0, 0.37], np.float32)
    backend = _backend(isa)
    got = backend.kernels.conv2d_requantize(x, a_bits, backend.pack_weights(w, w_bits), 8, 1, 1,
                                            scale, bias, bits, ratio)
    np.testing.assert_array_equal(got, independent.requantize(acc, scale, bias, bits, ratio))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c, kh, kw, padding, hw", [
    (1, 3, 3, 1, (8, 8)),       # the digits CNN's first layer
    (3, 3, 3, 1, (7, 13)),      # RGB; rows of 13 positions end in a partial block of 5
    (1, 5, 5, 2, (6, 21)),
    (4, 4, 4, 0, (9, 17)),      # K = 64, the largest direct conv
    (5, 3, 3, 1, (5, 9)),       # K = 45
    (2, 3, 3, 1, (6, 5)),       # rows of 5: every block short, 8-byte stores spill into the next
    (2, 3, 3, 0, (11, 3)),      # rows of 1 position
    (13, 1, 5, 0, (3, 12)),     # K = 65: the GEMM path
])
@pytest.mark.parametrize("per_position", [False, True])
def test_first_layer_convs_with_requantize(isa, c, kh, kw, padding, hw, per_position):
    # On the avx2 and avx512 paths a stride-1 conv with K <= 64 runs as a direct convolution
    # (8 output positions per vector, no im2col); the others and K = 65 take the GEMM. Extreme codes
    # on part of the input, mixed widths, A = 8 with some channels shifted.
    rng = np.random.default_rng(c * 100 + kh * 10 + kw + per_position)
    b, o, (h, w_) = 3, 11, hw
    a_bits = rng.integers(5, 9, c).astype(np.uint8)
    w_bits = rng.integers(1, 9, o).astype(np.uint8)
    x = (rng.random((b, c, h, w_)) * (2.0 ** a_bits[None, :, None, None])).astype(np.uint8)
    x[0] = ((1 << a_bits.astype(np.int64)) - 1)[:, None, None]
    w = (rng.random((o, c, kh, kw)) * (2.0 ** w_bits[:, None, None, None])).astype(np.uint8)
    w[0] = (1 << int(w_bits[0])) - 1
    acc = independent.conv_acc(x, a_bits, w, w_bits, 8, 1, padding)
    positions = acc.shape[2] * acc.shape[3]
    length = o * positions if per_position else o
    scale = (rng.standard_normal(o) * 1e-3).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    bits = rng.integers(1, 9, length).astype(np.uint8)
    ratio = (2.0 ** bits / rng.uniform(0.5, 4.0, length)).astype(np.float32)
    if per_position:
        want = independent.requantize(acc.reshape(b, -1), np.repeat(scale, positions),
                                      np.repeat(bias, positions), bits, ratio)
        want = want.reshape(acc.shape)
    else:
        want = independent.requantize(acc, scale, bias, bits, ratio)
    for threads in THREADS:
        backend = _backend(isa, threads)
        got = backend.kernels.conv2d_requantize(x, a_bits, backend.pack_weights(w, w_bits), 8,
                                                1, padding, scale, bias, bits, ratio)
        np.testing.assert_array_equal(got, want)
        direct = isa in ("avx2", "avx512") and c * kh * kw <= 64
        assert (backend.last_path[1] == ("direct",)) == direct


# ------------------------------------------------------------- int32 conversion guard

@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(3, 2, 4, 8), (6, 21)])
def test_epilogue_near_the_int32_limits(isa, shape):
    """Groups of 8 mixing values inside and outside |acc| < 2^31 (and ones float32 rounds)."""
    rng = np.random.default_rng(7)
    edges = np.array([2 ** 31 - 1, -(2 ** 31 - 1), 2 ** 31, -(2 ** 31), 2 ** 31 + 1, 2 ** 40,
                      -(2 ** 40), 2 ** 24 + 1, 2 ** 25 + 3, -(2 ** 24 + 1), 0, 1, -1], np.int64)
    acc = rng.choice(edges, shape)
    o = shape[1]
    scale = np.full(o, 2.0 ** -28, np.float32) * rng.uniform(0.5, 1.5, o).astype(np.float32)
    bias = rng.uniform(0, 1, o).astype(np.float32)
    bits = rng.integers(1, 9, o).astype(np.uint8)
    ratio = rng.uniform(0.5, 40, o).astype(np.float32)
    backend = _backend(isa)
    want = independent.epilogue(acc, scale, bias).view(np.uint32)
    np.testing.assert_array_equal(backend.epilogue(acc, scale, bias).view(np.uint32), want)
    np.testing.assert_array_equal(backend.kernels.epilogue(acc, scale, bias).view(np.uint32),
                                  want)
    np.testing.assert_array_equal(backend.requantize(acc, scale, bias, bits, ratio),
                                  independent.requantize(acc, scale, bias, bits, ratio))


# ------------------------------------------------------------------- the deploy model

def _deploy(seed):
    """A small random CNN with per-feature bits after Flatten, as a DeployModel, and inputs."""
    return random_cnn_deploy(seed, (2, 9, 11), 4, (5, 7), (2, 4), 12)


def _outcome(deploy, x, backend):
    try:
        return deploy.forward(x, backend=backend).view(np.uint32)
    except ValueError as exc:
        return str(exc)


@pytest.mark.parametrize("isa", ISAS)
def test_deploy_forward_uses_the_unchecked_entries_and_matches_ref(isa):
    deploy, x = _deploy(4)
    assert deploy.quant_stages[1].per_feature
    want = deploy.forward(x, backend="ref")
    for threads in THREADS:
        backend = _backend(isa, threads)
        assert deploy._prepared(f"test-{isa}-{threads}", backend)[1] is not None
        got = deploy.forward(x, backend=backend)
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
def test_deploy_model_handing_on_too_many_bits_takes_the_checked_path(isa):
    deploy, x = _deploy(5)
    bad = copy.deepcopy(deploy)
    bad._packed = {}
    bad.stages[0].out_bits = np.full_like(bad.stages[0].out_bits, 8)
    backend = _backend(isa)
    assert bad._prepared("test", backend)[1] is None
    ref = _outcome(bad, x, "ref")
    assert isinstance(ref, str) and "code above" in ref
    assert _outcome(bad, x, backend) == ref


@pytest.mark.parametrize("isa", ISAS)
def test_deploy_checks_the_first_stage_input_codes(isa):
    deploy, x = _deploy(6)
    low = copy.deepcopy(deploy)
    low._packed = {}
    low.stages[0].a_bits = np.full_like(low.stages[0].a_bits, 4)
    backend = _backend(isa)
    assert low._prepared("test", backend)[1] is not None
    ref = _outcome(low, x, "ref")
    assert isinstance(ref, str) and "code above 2**bits - 1 = 15" in ref
    assert _outcome(low, x, backend) == ref
    ok = x >> 4
    np.testing.assert_array_equal(_outcome(low, ok, backend), _outcome(low, ok, "ref"))
