"""The cuda backend on a real GPU: the b1 mma fragment probe and each engine, bit for bit.

Runs only where CuPy sees a CUDA device (``cupy.is_available()``); elsewhere every
test is skipped with that reason. The contract tests (test_contract.py, id
``cuda``) also run on the GPU then.
"""

import numpy as np
import pytest
from hypothesis import given, strategies as st

import independent
from strategies import LONG_K_PLANES, conv_case, linear_case, long_k_case
from test_cuda_emu import mma_reference


def _gpu_or_skip():
    try:
        import cupy
    except ImportError:
        pytest.skip("needs CuPy and an NVIDIA GPU: pip install cupy-cuda12x on a GPU machine "
                    "runs these tests")
    if not cupy.is_available():
        pytest.skip("needs a CUDA device: cupy.is_available() is False here; a GPU machine runs "
                    "these tests")
    return cupy


@pytest.fixture(scope="module")
def gpu():
    _gpu_or_skip()
    from soniq_fast.cuda.backend import CudaBackend
    from soniq_fast.cuda.runtime.gpu import GpuRuntime
    return CudaBackend(GpuRuntime(), "cuda")


def _fragments(seed, density):
    rng = np.random.default_rng(seed)
    weights = 1 << np.arange(32, dtype=np.uint64)
    a = ((rng.random((32, 4, 32)) < density) * weights).sum(axis=-1).astype(np.uint32)
    b = ((rng.random((32, 2, 32)) < density) * weights).sum(axis=-1).astype(np.uint32)
    return a, b


@given(seed=st.integers(0, 2 ** 32 - 1), density=st.sampled_from([0.05, 0.5, 0.95]))
def test_b1_mma_fragment_model_matches_hardware(gpu, seed, density):
    if gpu.runtime.compute_capability < 80:
        pytest.skip(f"the b1 mma.sync m16n8k256 needs sm_80+, this GPU is "
                    f"sm_{gpu.runtime.compute_capability}")
    from soniq_fast.cuda.runtime.emulated import EmulatedRuntime
    cp = gpu.runtime.cp
    a, b = _fragments(seed, density)
    d_gpu = cp.zeros(128, cp.int32)
    gpu.runtime.function("mma_probe")((1,), (32,), (cp.asarray(a.reshape(-1)),
                                                    cp.asarray(b.reshape(-1)), d_gpu))
    d_model = np.zeros(128, np.int32)
    EmulatedRuntime().function("mma_probe")((1,), (32,), (a.reshape(-1), b.reshape(-1), d_model))
    np.testing.assert_array_equal(cp.asnumpy(d_gpu), d_model)
    np.testing.assert_array_equal(d_model.reshape(32, 4), mma_reference(a, b))


@pytest.mark.parametrize("engine", ["auto", "popcount", "mma", "int8"])
@given(case=linear_case())
def test_engine_linear_on_hardware(gpu, engine, case):
    a, a_bits, w, w_bits, hi = case
    backend = gpu.with_engine(engine)
    np.testing.assert_array_equal(backend.linear_int(a, a_bits, w, w_bits, hi),
                                  independent.linear_acc(a, a_bits, w, w_bits, hi))


@pytest.mark.parametrize("engine", ["auto", "popcount", "mma", "int8"])
@given(case=conv_case())
def test_engine_conv_on_hardware(gpu, engine, case):
    x, a_bits, w, w_bits, hi, stride, padding = case
    backend = gpu.with_engine(engine)
    np.testing.assert_array_equal(
        backend.conv2d_int(x, a_bits, w, w_bits, hi, stride=stride, padding=padding),
        independent.conv_acc(x, a_bits, w, w_bits, hi, stride, padding))


@pytest.mark.parametrize("engine", ["auto", "popcount", "mma", "int8"])
@pytest.mark.parametrize("hi, w_top", LONG_K_PLANES)
def test_engine_over_long_k_on_hardware(gpu, engine, hi, w_top):
    a, a_bits, w, w_bits, hi = long_k_case(hi, w_top)
    np.testing.assert_array_equal(gpu.with_engine(engine).linear_int(a, a_bits, w, w_bits, hi),
                                  independent.linear_acc(a, a_bits, w, w_bits, hi))


def test_accepts_cupy_arrays(gpu):
    cp = gpu.runtime.cp
    rng = np.random.default_rng(1)
    a = rng.integers(0, 4, (9, 100)).astype(np.uint8)
    w = rng.integers(0, 2, (7, 100)).astype(np.uint8)
    a_bits, w_bits = np.full(100, 2, np.uint8), np.ones(7, np.uint8)
    got = gpu.linear_int(cp.asarray(a), cp.asarray(a_bits), cp.asarray(w), cp.asarray(w_bits), 2)
    np.testing.assert_array_equal(got, independent.linear_acc(a, a_bits, w, w_bits, 2))
