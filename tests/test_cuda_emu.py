"""The CUDA emulation runtime itself: barriers, schedules, warp intrinsics, the b1
mma model, the loader's cache, and each GEMM engine of the cuda backend.

The contract tests (test_contract.py) already run the whole backend under the three
schedules, and each engine forced under two of them (backend ids
``cuda-emu:<schedule>+<engine>``); this file checks the runtime's own promises.
"""

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import independent
from strategies import LONG_K_PLANES, linear_case, long_k_case
from soniq_fast.cuda import EMU_BACKEND
from soniq_fast.cuda.emu import EmuLaunchError, EmuModule
from soniq_fast.cuda.emu import build
from soniq_fast.cuda.kernel_files import KERNEL_DIR
from soniq_fast.cuda.runtime.emulated import EmulatedRuntime

SCHEDULES = ["forward", "reverse", "random"]

RULES = r"""
extern "C" __global__ void early_return_barrier(int* out) {
    if (threadIdx.x < 5) return;
    __syncthreads();
    out[threadIdx.x] = 1;
}
extern "C" __global__ void split_barrier(int* out) {
    if (threadIdx.x % 2) { __syncthreads(); } else { __syncthreads(); }   // one line, two barriers
    out[threadIdx.x] = 1;
}
extern "C" __global__ void warp_waits_for_exited_lane(int* out) {
    if (threadIdx.x == 3) return;
    out[threadIdx.x] = __shfl_sync(0xffffffffu, (int)threadIdx.x, 0);
}
extern "C" __global__ void run_order(int* counter, int* order) {
    order[atomicAdd(counter, 1)] = blockIdx.x * blockDim.x + threadIdx.x;
}
extern "C" __global__ void block_sum(const int* x, int* out) {
    __shared__ int part[64];
    const int t = threadIdx.x;
    part[t] = x[blockIdx.x * 64 + t];
    __syncthreads();
    for (int half = 32; half > 0; half /= 2) {
        if (t < half) part[t] += part[t + half];
        __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = part[0];
}
extern "C" __global__ void stale_shared(int* out) {
    __shared__ int cell[2];
    if (blockIdx.x == 0) cell[0] = 7;        // only block 0 writes
    __syncthreads();
    out[blockIdx.x] = cell[0];
}
extern "C" __global__ void write_one_past(int* out, int n) {
    out[n + threadIdx.x] = 1;
}
extern "C" __global__ void write_before(int* out) {
    out[-1] = 1;
}
extern "C" __global__ void warp_ops(const int* x, int* out, int delta) {
    const int t = threadIdx.x, v = x[t];
    out[0 * 64 + t] = __shfl_sync(0xffffffffu, v, (t * 7) % 32);
    out[1 * 64 + t] = __shfl_down_sync(0xffffffffu, v, delta);
    out[2 * 64 + t] = __shfl_up_sync(0xffffffffu, v, delta);
    out[3 * 64 + t] = __shfl_xor_sync(0xffffffffu, v, delta);
    out[4 * 64 + t] = (int)__ballot_sync(0xffffffffu, v & 1);
    out[5 * 64 + t] = __any_sync(0xffffffffu, v > 90);
    out[6 * 64 + t] = __all_sync(0xffffffffu, v >= 0);
    out[7 * 64 + t] = __shfl_xor_sync(0xffffffffu, v, 1, 4);
}
"""


@pytest.fixture(scope="module", params=SCHEDULES)
def rules(request):
    return EmuModule(code=RULES, schedule=request.param, seed=3)


def test_barrier_after_early_return_is_reported(rules):
    with pytest.raises(EmuLaunchError, match=r"reached by 27 of 32 threads.*divergent"):
        rules.get_function("early_return_barrier")((1,), (32,), (np.zeros(32, np.int32),))


def test_barriers_on_different_lines_are_reported(rules):
    with pytest.raises(EmuLaunchError, match="divergent __syncthreads"):
        rules.get_function("split_barrier")((1,), (32,), (np.zeros(32, np.int32),))


def test_warp_sync_waiting_for_exited_lane_is_reported(rules):
    with pytest.raises(EmuLaunchError, match="never arrive"):
        rules.get_function("warp_waits_for_exited_lane")((1,), (32,), (np.zeros(32, np.int32),))


def test_schedules_run_threads_and_blocks_in_their_order():
    orders = {}
    for schedule in SCHEDULES:
        module = EmuModule(code=RULES, schedule=schedule, seed=11)
        counter, order = np.zeros(1, np.int32), np.full(96, -1, np.int32)
        module.get_function("run_order")((3,), (32,), (counter, order))
        assert sorted(order) == list(range(96))
        orders[schedule] = order
    np.testing.assert_array_equal(orders["forward"], np.arange(96))
    np.testing.assert_array_equal(orders["reverse"], np.arange(96)[::-1])
    assert not np.array_equal(orders["random"], np.arange(96))
    assert not np.array_equal(orders["random"], np.arange(96)[::-1])


def test_barrier_orders_shared_memory_under_every_schedule(rules):
    x = np.random.default_rng(0).integers(-1000, 1000, 5 * 64).astype(np.int32)
    out = np.zeros(5, np.int32)
    rules.get_function("block_sum")((5,), (64,), (x, out))
    np.testing.assert_array_equal(out, x.reshape(5, 64).sum(axis=1))


def test_shared_memory_is_fresh_garbage_in_every_block():
    module = EmuModule(code=RULES, schedule="forward")
    out = np.zeros(2, np.int32)
    module.get_function("stale_shared")((2,), (1,), (out,))
    assert out[0] == 7
    assert out[1] == np.frombuffer(b"\xa5" * 4, np.int32)[0]   # the poison, not block 0's 7


def test_out_of_bounds_writes_are_reported(rules):
    out = np.zeros(8, np.int32)
    with pytest.raises(EmuLaunchError, match="wrote past the end of argument out"):
        rules.get_function("write_one_past")((1,), (1,), (out, np.int32(8)))
    with pytest.raises(EmuLaunchError, match="wrote before the start of argument out"):
        rules.get_function("write_before")((1,), (1,), (out,))
    np.testing.assert_array_equal(out, np.zeros(8, np.int32))   # never copied back
    rules.get_function("write_one_past")((1,), (8,), (out, np.int32(0)))  # in bounds: written back
    np.testing.assert_array_equal(out, np.ones(8, np.int32))


@pytest.mark.parametrize("delta", [1, 3, 16])
def test_warp_intrinsics(rules, delta):
    x = np.random.default_rng(delta).integers(0, 100, 64).astype(np.int32)
    out = np.zeros(8 * 64, np.int32)
    rules.get_function("warp_ops")((1,), (64,), (x, out, np.int32(delta)))
    got = out.reshape(8, 2, 32)
    for w in range(2):
        v = x[32 * w:32 * w + 32]
        lane = np.arange(32)
        np.testing.assert_array_equal(got[0, w], v[(lane * 7) % 32])
        np.testing.assert_array_equal(got[1, w], np.where(lane + delta < 32, v[np.minimum(lane + delta, 31)], v))
        np.testing.assert_array_equal(got[2, w], np.where(lane >= delta, v[np.maximum(lane - delta, 0)], v))
        np.testing.assert_array_equal(got[3, w], v[lane ^ delta])
        ballot = int(sum(1 << i for i in range(32) if v[i] & 1))
        np.testing.assert_array_equal(got[4, w].view(np.uint32), np.full(32, ballot, np.uint32))
        np.testing.assert_array_equal(got[5, w], np.full(32, int((v > 90).any())))
        np.testing.assert_array_equal(got[6, w], np.ones(32))
        np.testing.assert_array_equal(got[7, w], v[lane ^ 1])


def test_launch_arguments_are_checked(rules):
    fn = rules.get_function("block_sum")
    with pytest.raises(TypeError, match="takes 2 arguments"):
        fn((1,), (64,), (np.zeros(64, np.int32),))
    frozen = np.zeros(1, np.int32)
    frozen.setflags(write=False)
    with pytest.raises(ValueError, match="out.*read-only"):
        fn((1,), (64,), (np.zeros(64, np.int32), frozen))
    warp_ops = rules.get_function("warp_ops")
    with pytest.raises(TypeError, match="delta is int64 but the kernel takes int32"):
        warp_ops((1,), (64,), (np.zeros(64, np.int32), np.zeros(512, np.int32), 3))
    with pytest.raises(TypeError, match="delta is float32"):
        warp_ops((1,), (64,), (np.zeros(64, np.int32), np.zeros(512, np.int32), np.float32(3)))


# ------------------------------------------------------------------ b1 mma model

def mma_reference(a_frag, b_frag):
    """D = popcount(A & B) with A, B rebuilt from the fragment layout in mma_b1.cuh."""
    bits = lambda word: [(int(word) >> e) & 1 for e in range(32)]
    a = np.zeros((16, 256), np.int64)
    b = np.zeros((256, 8), np.int64)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        for reg, (row, k0) in enumerate([(g, 32 * t), (g + 8, 32 * t),
                                         (g, 128 + 32 * t), (g + 8, 128 + 32 * t)]):
            a[row, k0:k0 + 32] = bits(a_frag[lane, reg])
        b[32 * t:32 * t + 32, g] = bits(b_frag[lane, 0])
        b[128 + 32 * t:128 + 32 * t + 32, g] = bits(b_frag[lane, 1])
    d = a @ b                                   # popcount(A_row & B_col) for 0/1 entries
    out = np.zeros((32, 4), np.int64)
    for lane in range(32):
        g, t = lane // 4, lane % 4
        out[lane] = [d[g, 2 * t], d[g, 2 * t + 1], d[g + 8, 2 * t], d[g + 8, 2 * t + 1]]
    return out


@given(seed=st.integers(0, 2 ** 32 - 1), density=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0]))
def test_b1_mma_model_matches_direct_popcount(seed, density):
    rng = np.random.default_rng(seed)
    a_bits = rng.random((32, 4, 32)) < density
    b_bits = rng.random((32, 2, 32)) < density
    weights = (1 << np.arange(32, dtype=np.uint64))
    a = (a_bits * weights).sum(axis=-1).astype(np.uint32)
    b = (b_bits * weights).sum(axis=-1).astype(np.uint32)
    d = np.zeros(128, np.int32)
    probe = EmulatedRuntime("random", seed=seed).function("mma_probe")
    probe((1,), (32,), (a.reshape(-1), b.reshape(-1), d))
    np.testing.assert_array_equal(d.reshape(32, 4), mma_reference(a, b))


# --------------------------------------------------------------------- loader cache

def test_loader_builds_once_per_content_and_respects_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code = 'extern "C" __global__ void put(int* o, int v) { o[threadIdx.x] = v + %d; }'
    calls = []
    real_run = build.subprocess.run
    monkeypatch.setattr(build.subprocess, "run",
                        lambda cmd, **kw: (calls.append(cmd), real_run(cmd, **kw))[1])
    out = np.zeros(4, np.int32)
    EmuModule(code=code % 1).get_function("put")((1,), (4,), (out, np.int32(5)))
    compiles = sum(1 for c in calls if "-shared" in c)
    EmuModule(code=code % 1, schedule="reverse").get_function("put")((1,), (4,),
                                                                      (out, np.int32(5)))
    assert sum(1 for c in calls if "-shared" in c) == compiles == 1
    np.testing.assert_array_equal(out, [6, 6, 6, 6])
    EmuModule(code=code % 2).get_function("put")((1,), (4,), (out, np.int32(5)))
    assert sum(1 for c in calls if "-shared" in c) == 2
    np.testing.assert_array_equal(out, [7, 7, 7, 7])
    cache = tmp_path / "soniq" / "cuda-emu"
    assert len(list(cache.glob("*.so"))) == 2
    assert not [p for p in cache.iterdir() if p.name.startswith("build-")]   # temp dirs cleaned


def test_loader_hash_covers_included_headers(tmp_path):
    (tmp_path / "value.cuh").write_text("#define VALUE 1\n")
    code = '#include "value.cuh"\nextern "C" __global__ void k(int* o) { o[0] = VALUE; }'
    first = build.content_hash(code, (str(tmp_path),))
    (tmp_path / "value.cuh").write_text("#define VALUE 2\n")
    assert build.content_hash(code, (str(tmp_path),)) != first


# ------------------------------------------------------------- engines of the backend

ENGINES = ["popcount", "mma", "int8"]


@pytest.mark.parametrize("engine", ENGINES)
@settings(max_examples=10)
@given(case=linear_case(max_m=150, max_n=100))
def test_each_engine_across_many_blocks(engine, case):
    # larger than one block tile (up to 64 x 64) in both directions
    a, a_bits, w, w_bits, hi = case
    backend = EMU_BACKEND.variant("random").with_engine(engine)
    np.testing.assert_array_equal(backend.linear_int(a, a_bits, w, w_bits, hi),
                                  independent.linear_acc(a, a_bits, w, w_bits, hi))


@pytest.mark.parametrize("engine", ENGINES + ["auto", "cuda-core"])
def test_each_engine_on_a_grid_of_blocks(engine):
    rng = np.random.default_rng(7)
    m, k, n, hi = 130, 300, 140, 3
    a_bits = rng.integers(1, hi + 1, k).astype(np.uint8)
    w_bits = rng.integers(1, 9, n).astype(np.uint8)
    a = (rng.random((m, k)) * (1 << a_bits.astype(np.int64))).astype(np.uint8)
    w = (rng.random((n, k)) * (1 << w_bits[:, None].astype(np.int64))).astype(np.uint8)
    backend = EMU_BACKEND.variant("reverse").with_engine(engine)
    np.testing.assert_array_equal(backend.linear_int(a, a_bits, w, w_bits, hi),
                                  independent.linear_acc(a, a_bits, w, w_bits, hi))


@pytest.mark.parametrize("hi, w_top", LONG_K_PLANES)
def test_each_engine_over_long_k(hi, w_top):
    a, a_bits, w, w_bits, hi = long_k_case(hi, w_top)
    want = independent.linear_acc(a, a_bits, w, w_bits, hi)
    for engine in ENGINES:
        backend = EMU_BACKEND.variant("random").with_engine(engine)
        np.testing.assert_array_equal(backend.linear_int(a, a_bits, w, w_bits, hi), want)


def test_engine_split_follows_plane_pairs_and_device():
    from soniq_fast.cuda.launch.engines import split_rows
    bits = np.array([1, 2, 8, 1, 4], np.uint8)
    sm75 = split_rows(bits, 1, "auto", 75)           # no tensor cores: popcount up to 1 pair
    np.testing.assert_array_equal(sm75["bitserial_gemm"], [0, 3])
    np.testing.assert_array_equal(sm75["int8_gemm"], [1, 4, 2])
    sm80 = split_rows(bits, 8, "auto", 80)           # A = 8: 8, 16, 64, 8, 32 plane pairs;
    np.testing.assert_array_equal(sm80["mma_gemm"], [0, 3, 1, 4])   # b1 mma up to 32 pairs
    np.testing.assert_array_equal(sm80["int8_gemm"], [2])
    assert split_rows(bits, 1, "cuda-core", 90).keys() == sm75.keys()
    # every group is sorted by width, so column blocks hold one width where they can
    np.testing.assert_array_equal(split_rows(bits, 8, "mma", 90)["mma_gemm"], [0, 3, 1, 4, 2])


def test_k_beyond_int32_accumulator_is_refused():
    k = 33026
    with pytest.raises(ValueError, match="w_codes.*33025"):
        EMU_BACKEND.linear_int(np.zeros((1, k), np.uint8), np.ones(k, np.uint8),
                               np.zeros((1, k), np.uint8), np.ones(1, np.uint8), 1)


def test_k_at_the_limit_is_exact_with_extreme_codes():
    k = 33025
    a = np.full((2, k), 255, np.uint8)
    w = np.stack([np.full(k, 255, np.uint8), np.zeros(k, np.uint8)])
    bits = np.full(k, 8, np.uint8)
    wb = np.full(2, 8, np.uint8)
    want = independent.linear_acc(a, bits, w, wb, 8)
    for engine in ENGINES:
        got = EMU_BACKEND.with_engine(engine).linear_int(a, bits, w, wb, 8)
        np.testing.assert_array_equal(got, want)


# ------------------------------------------------------------------- backend access

def test_gpu_backend_without_gpu_says_what_is_missing(monkeypatch):
    import soniq_fast.cuda as cuda
    monkeypatch.delenv("SONIQ_CUDA_EMULATE", raising=False)
    try:
        import cupy
        if cupy.is_available():
            pytest.skip("a GPU is present: tests/test_cuda_hardware.py covers the real backend")
    except ImportError:
        pass
    with pytest.raises((ImportError, RuntimeError), match="CuPy|CUDA device"):
        cuda.BACKEND


def test_emulate_env_makes_backend_the_emulated_one(monkeypatch):
    import soniq_fast.cuda as cuda
    from soniq_ref import get_backend
    monkeypatch.setenv("SONIQ_CUDA_EMULATE", "1")
    assert cuda.BACKEND is cuda.EMU_BACKEND
    assert get_backend("cuda") is cuda.EMU_BACKEND
    assert get_backend("cuda-emu") is cuda.EMU_BACKEND


def test_kernel_sources_carry_no_emulation_code():
    # the same .cu files go to NVRTC: nothing in them may depend on the emulation header
    for path in KERNEL_DIR.iterdir():
        assert "soniq_emu" not in path.read_text(), path.name


def test_gpu_runtime_launch_path_with_the_emulator_standing_in_for_cupy(monkeypatch):
    # The GPU backend's own code (GpuRuntime: RawModule options, array transfers,
    # launches) driven through a stand-in for CuPy whose RawModule is the emulator.
    import sys
    import types
    from soniq_fast.cuda.backend import CudaBackend
    from soniq_fast.cuda.runtime.gpu import GpuRuntime
    seen_options = []

    def raw_module(code, options):
        seen_options.append(options)
        return EmuModule(code=code, options=options, schedule="random", seed=5)

    fake = types.SimpleNamespace(
        RawModule=raw_module, is_available=lambda: True, asarray=np.asarray,
        ascontiguousarray=np.ascontiguousarray, empty=np.empty, asnumpy=np.asarray,
        cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(compute_capability="86")))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    backend = CudaBackend(GpuRuntime(), "cuda")
    rng = np.random.default_rng(2)
    a_bits = rng.integers(1, 3, 90).astype(np.uint8)
    w_bits = np.array([1, 2, 8, 1, 5, 1, 1, 3, 2], np.uint8)
    a = (rng.random((21, 90)) * (1 << a_bits.astype(np.int64))).astype(np.uint8)
    w = (rng.random((9, 90)) * (1 << w_bits[:, None].astype(np.int64))).astype(np.uint8)
    acc = backend.linear_int(a, a_bits, backend.pack_weights(w, w_bits), None, 2)
    np.testing.assert_array_equal(acc, independent.linear_acc(a, a_bits, w, w_bits, 2))
    scale, bias = np.full(9, 0.25, np.float32), np.full(9, -1.0, np.float32)
    np.testing.assert_array_equal(backend.epilogue(acc, scale, bias).view(np.uint32),
                                  independent.epilogue(acc, scale, bias).view(np.uint32))
    assert all("--fmad=false" in opts and any(o.startswith("-I") for o in opts)
               for opts in seen_options)


def test_module_from_a_path_resolves_includes_next_to_it(tmp_path):
    (tmp_path / "offset.cuh").write_text("#define OFFSET 40\n")
    (tmp_path / "k.cu").write_text('#include "offset.cuh"\n'
                                   'extern "C" __global__ void k(int* o) { o[threadIdx.x] = OFFSET + 2; }\n')
    out = np.zeros(3, np.int32)
    EmuModule(path=str(tmp_path / "k.cu")).get_function("k")((1,), (3,), (out,))
    np.testing.assert_array_equal(out, [42, 42, 42])
    with pytest.raises(TypeError, match="exactly one of code or path"):
        EmuModule()
    with pytest.raises(AttributeError, match="no extern"):
        EmuModule(path=str(tmp_path / "k.cu")).get_function("missing")
