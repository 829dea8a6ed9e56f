"""The backend contract, tested once and run against every available backend.

Integer results must equal the independent implementation exactly; float results
(epilogue) must equal it bit for bit. No tolerances anywhere in this file.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import independent
from strategies import RAGGED_K, bit_widths, codes_for, conv_case, linear_case


def assert_same(got, want):
    got = np.asarray(got.get() if hasattr(got, "get") else got)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    if got.dtype.kind == "f":
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    else:
        np.testing.assert_array_equal(got, want)


@given(case=linear_case())
def test_linear_int_exact(backend, case):
    a, a_bits, w, w_bits, hi = case
    want = independent.linear_acc(a, a_bits, w, w_bits, hi)
    assert_same(backend.linear_int(a, a_bits, w, w_bits, hi), want)


@given(case=linear_case())
def test_linear_int_packed_weights(backend, case):
    a, a_bits, w, w_bits, hi = case
    packed = backend.pack_weights(w, w_bits)
    want = independent.linear_acc(a, a_bits, w, w_bits, hi)
    assert_same(backend.linear_int(a, a_bits, packed, None, hi), want)
    assert_same(backend.linear_int(a, a_bits, packed, w_bits, hi), want)


@given(case=conv_case())
def test_conv2d_int_exact(backend, case):
    x, a_bits, w, w_bits, hi, stride, padding = case
    want = independent.conv_acc(x, a_bits, w, w_bits, hi, stride, padding)
    got = backend.conv2d_int(x, a_bits, w, w_bits, hi, stride=stride, padding=padding)
    assert_same(got, want)
    packed = backend.pack_weights(w, w_bits)
    assert_same(backend.conv2d_int(x, a_bits, packed, None, hi, stride=stride,
                                   padding=padding), want)


@given(case=linear_case(max_m=12, max_n=2))
def test_pack_activations_matches_reference(backend, case):
    import soniq_ref
    a, a_bits, _, _, hi = case
    assert_same(backend.pack_activations(a, a_bits, hi),
                soniq_ref.pack_activations(a, a_bits, hi))


@st.composite
def epilogue_case(draw):
    conv = draw(st.booleans())
    o = draw(st.integers(1, 20))
    shape = (draw(st.integers(1, 3)), o, draw(st.integers(1, 7)), draw(st.integers(1, 7))) \
        if conv else (draw(st.integers(1, 50)), o)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    magnitude = draw(st.sampled_from([2 ** 8, 2 ** 20, 2 ** 31, 2 ** 40]))
    acc = rng.integers(-magnitude, magnitude, shape, dtype=np.int64)
    scale = (rng.standard_normal(o) * 10.0 ** rng.integers(-6, 1, o)).astype(np.float32)
    bias = (rng.standard_normal(o) * 4).astype(np.float32)
    bits = draw(bit_widths(o))
    ratio = (2.0 ** bits / rng.uniform(0.05, 8.0, o)).astype(np.float32)
    return acc, scale, bias, bits, ratio


@given(case=epilogue_case())
def test_epilogue_bit_exact(backend, case):
    acc, scale, bias, _, _ = case
    assert_same(backend.epilogue(acc, scale, bias), independent.epilogue(acc, scale, bias))


@given(case=epilogue_case())
def test_requantize_bit_exact(backend, case):
    acc, scale, bias, bits, ratio = case
    assert_same(backend.requantize(acc, scale, bias, bits, ratio),
                independent.requantize(acc, scale, bias, bits, ratio))


def test_requantize_ties_round_to_even(backend):
    # y * ratio lands exactly on .5: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, 3.5 -> 4.
    acc = np.array([[1], [3], [5], [7]], np.int64)
    out = backend.requantize(acc, np.array([0.5], np.float32), np.array([0.0], np.float32),
                             np.array([3], np.uint8), np.array([1.0], np.float32))
    assert_same(out, np.array([[0], [2], [2], [4]], np.uint8))


# ------------------------------------------------------------------- invalid arguments

def _linear_args():
    a = np.zeros((3, 5), np.uint8)
    return dict(a_codes=a, a_bits=np.full(5, 2, np.uint8), w_codes=np.zeros((4, 5), np.uint8),
                w_bits=np.full(4, 2, np.uint8), act_bits_hi=2)


LINEAR_BAD = [
    ("a_codes", dict(a_codes=np.zeros((3, 5), np.int64)), TypeError),
    ("a_codes", dict(a_codes=np.zeros((3, 5, 1), np.uint8)), ValueError),
    ("a_codes", dict(a_codes=np.full((3, 5), 4, np.uint8)), ValueError),
    ("a_codes", dict(a_codes=np.zeros((3, 6), np.uint8)), ValueError),
    ("a_bits", dict(a_bits=np.full(5, 3, np.uint8)), ValueError),
    ("a_bits", dict(a_bits=np.zeros(5, np.uint8)), ValueError),
    ("a_bits", dict(a_bits=np.full(4, 2, np.uint8)), ValueError),
    ("w_bits", dict(w_bits=np.full(4, 9, np.uint8)), ValueError),
    ("w_bits", dict(w_bits=np.full(4, 2, np.int32)), TypeError),
    ("w_codes", dict(w_codes=np.full((4, 5), 7, np.uint8)), ValueError),
    ("w_codes", dict(w_codes=[[0] * 5] * 4), TypeError),
    ("act_bits_hi", dict(act_bits_hi=9), ValueError),
    ("act_bits_hi", dict(act_bits_hi=2.0), TypeError),
]


@pytest.mark.parametrize("name,change,error", LINEAR_BAD)
def test_linear_int_rejects(backend, name, change, error):
    args = _linear_args()
    args.update(change)
    with pytest.raises(error, match=name):
        backend.linear_int(args["a_codes"], args["a_bits"], args["w_codes"], args["w_bits"],
                           args["act_bits_hi"])


CONV_BAD = [
    ("stride", dict(stride=0), ValueError),
    ("padding", dict(padding=-1), ValueError),
    ("padding", dict(padding=3), ValueError),
    ("x_codes", dict(x=np.zeros((1, 2, 2, 2), np.uint8), padding=0), ValueError),
    ("x_codes", dict(x=np.zeros((1, 3, 5, 5), np.uint8)), ValueError),
    ("w_codes", dict(w=np.zeros((4, 2, 3), np.uint8)), ValueError),
]


@pytest.mark.parametrize("name,change,error", CONV_BAD)
def test_conv2d_int_rejects(backend, name, change, error):
    args = dict(x=np.zeros((1, 2, 5, 5), np.uint8), w=np.zeros((4, 2, 3, 3), np.uint8),
                stride=1, padding=1)
    args.update(change)
    with pytest.raises(error, match=name):
        backend.conv2d_int(args["x"], np.full(2, 2, np.uint8), args["w"],
                           np.full(4, 2, np.uint8), 2, stride=args["stride"],
                           padding=args["padding"])


EPILOGUE_BAD = [
    ("acc", dict(acc=np.zeros((2, 3), np.int32)), TypeError),
    ("scale", dict(scale=np.ones(4, np.float32)), ValueError),
    ("scale", dict(scale=np.array([1, np.nan, 1], np.float32)), ValueError),
    ("bias", dict(bias=np.array([1, np.inf, 1], np.float32)), ValueError),
    ("bias", dict(bias=np.zeros(3, np.float64)), TypeError),
    ("out_bits", dict(bits=np.full(3, 0, np.uint8)), ValueError),
    ("out_ratio", dict(ratio=np.zeros(3, np.float32)), ValueError),
]


@pytest.mark.parametrize("name,change,error", EPILOGUE_BAD)
def test_requantize_rejects(backend, name, change, error):
    args = dict(acc=np.zeros((2, 3), np.int64), scale=np.ones(3, np.float32),
                bias=np.zeros(3, np.float32), bits=np.full(3, 4, np.uint8),
                ratio=np.ones(3, np.float32))
    args.update(change)
    with pytest.raises(error, match=name):
        backend.requantize(args["acc"], args["scale"], args["bias"], args["bits"], args["ratio"])


def test_pack_weights_rejects(backend):
    with pytest.raises(ValueError, match="w_codes"):
        backend.pack_weights(np.full((2, 3), 255, np.uint8), np.array([8, 7], np.uint8))
    with pytest.raises(ValueError, match="w_bits"):
        backend.pack_weights(np.zeros((2, 3), np.uint8), np.array([1], np.uint8))


def test_accepts_non_contiguous_and_read_only(backend):
    rng = np.random.default_rng(5)
    big = rng.integers(0, 4, (6, 140)).astype(np.uint8)
    a = big[::2, ::2]                                # non-contiguous view, K = 70
    a_bits = np.full(70, 2, np.uint8)
    w = rng.integers(0, 8, (5, 70)).astype(np.uint8)
    w.setflags(write=False)
    w_bits = np.full(5, 3, np.uint8)
    assert_same(backend.linear_int(a, a_bits, w, w_bits, 2),
                independent.linear_acc(a, a_bits, w, w_bits, 2))


# ------------------------------------------------------------------------ backend ids

def test_ids_cover_every_variant_and_engine():
    """tests/backends.py names every variant and every pinned engine of the backends that
    load here, so that the contract tests above run on each of them."""
    from backends import (CPU_ENGINES, CPU_ISAS, CUDA_ENGINES, EMU_SCHEDULES,
                          backend_from_id)
    from soniq_ref import get_backend
    assert get_backend("ref").variants == () and get_backend("ref").engines == ()
    expected = {"cpu": (CPU_ISAS, ("auto",) + CPU_ENGINES),
                "cuda-emu": (EMU_SCHEDULES, ("auto", "cuda-core") + CUDA_ENGINES)}
    for name, (variants, engines) in expected.items():
        try:
            backend = backend_from_id(name)
        except RuntimeError:
            continue          # not available here: its ids are skipped anyway
        assert set(backend.variants) == set(variants), name
        assert set(backend.engines) == set(engines), name


def test_engine_names_are_one_vocabulary():
    """The bit-serial engine on CUDA cores is 'popcount', as on the cpu; its former name
    'bitserial' is still accepted where users type it."""
    cuda = pytest.importorskip("soniq_fast.cuda")
    EMU_BACKEND = cuda.EMU_BACKEND
    assert EMU_BACKEND.with_engine("bitserial").engine == "popcount"
    with pytest.raises(ValueError, match="engine"):
        EMU_BACKEND.with_engine("bitserial-gemm")


# ---------------------------------------------------------------- the checking wrapper

class _CountingKernels:
    """The reference kernels, counting calls: a new backend's kernels as the wrapper sees
    them."""

    def __init__(self):
        from soniq_ref.backend import ReferenceKernels
        self.inner, self.calls = ReferenceKernels(), []
        self.name, self.packed_type, self.max_k = "probe", None, 100

    def __getattr__(self, name):
        method = getattr(self.inner, name)

        def counted(*args, **kwargs):
            self.calls.append(name)
            return method(*args, **kwargs)
        return counted


def test_a_new_backend_gets_every_check_from_the_wrapper():
    from soniq_ref import CheckedBackend
    kernels = _CountingKernels()
    probe = CheckedBackend("probe", kernels)
    args = _linear_args()
    for name, change, error in LINEAR_BAD:
        with pytest.raises(error, match=name):
            probe.linear_int(**{**args, **change})
    big = np.zeros((1, 101), np.uint8)
    with pytest.raises(ValueError, match="K = 101.*probe.*100"):
        probe.linear_int(big, np.ones(101, np.uint8), np.zeros((1, 101), np.uint8),
                         np.ones(1, np.uint8), 1)
    assert kernels.calls == []          # no kernel ran on a refused call
    want = independent.linear_acc(*args.values())
    assert_same(probe.linear_int(**args), want)
    assert_same(probe.linear_int(args["a_codes"], args["a_bits"],
                                 probe.pack_weights(args["w_codes"], args["w_bits"]), None, 2),
                want)
    assert "linear_int" in kernels.calls


def test_deploy_kernels_only_where_the_fused_kernels_are():
    from soniq_ref import get_backend
    from soniq_ref.contract import deploy_kernels
    assert deploy_kernels(get_backend("ref")) is None
    cuda = pytest.importorskip("soniq_fast.cuda")
    assert deploy_kernels(cuda.EMU_BACKEND) is None
    try:
        cpu = get_backend("cpu")
    except RuntimeError:
        return
    assert deploy_kernels(cpu) is cpu.kernels
