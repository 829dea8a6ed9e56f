"""Memory: packing, linear_int and conv2d_int on a large layer allocate no more than the
bounds stated in docs/reliability.md, for every backend that loads here.

Each backend is measured in a fresh subprocess, one operation at a time, two ways:
``tracemalloc`` (every NumPy allocation) and the process's peak resident set
(``VmHWM``, reset through ``/proc/self/clear_refs`` before each operation, so that
memory a C kernel takes with ``malloc`` counts too). The larger of the two, minus what
was resident before the call, must stay within the bound. Device memory of a real
GPU is not measured here, only what the process takes on the host.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import independent
from backends import parse_id
from soniq_ref import integer_core

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20

# The large layer (K ragged: not a multiple of 64):
#   linear: a [M, K], w [N, K] -> int64 [M, N];
#   conv:   x [B, C, H, H], w [O, C, KH, KH], padding PAD -> int64 [B, O, Ho, Ho];
#   A: the activation palette's high level.
LARGE = dict(M=256, K=4133, N=1024, B=8, C=32, H=28, O=64, KH=3, PAD=1, A=8)
# The CUDA emulation runs every CUDA thread as a fiber on the CPU, some thousand times
# slower than the compiled kernels: it gets a smaller layer (the bounds scale with it).
EMULATED = dict(M=128, K=2085, N=512, B=4, C=16, H=28, O=32, KH=3, PAD=1, A=8)


def dims_for(backend_id: str) -> dict:
    return EMULATED if backend_id.startswith("cuda-emu") else LARGE


def ref_bound(op: str, M, K, N, B, C, H, O, KH, PAD, A) -> int:
    """docs/reliability.md, the reference backend (bytes)."""
    kc, ho = C * KH * KH, H + 2 * PAD - KH + 1
    block = max(integer_core.BLOCK_BYTES, 8 * max(K, N))
    return {
        "pack_weights": 80 * N * K,
        "pack_activations": 8 * (A + 3) * M * K,
        "linear_int": M * K + N * K + 8 * N * K + 8 * M * N + 6 * block,
        "linear_int_packed": 136 * N * K + 8 * M * N + 6 * block,
        "conv2d_int": B * C * H * H + 9 * O * kc + 8 * B * O * ho * ho
        + 6 * max(integer_core.BLOCK_BYTES, 8 * ho * ho * max(kc, O)),
    }[op]


def kernel_bound(op: str, M, K, N, B, C, H, O, KH, PAD, A) -> int:
    """docs/reliability.md, the compiled backends (cpu, cuda-emu, cuda) (bytes):
    four times input + output."""
    ho = H + 2 * PAD - KH + 1
    inputs = {"pack_weights": N * K, "pack_activations": M * K,
              "linear_int": M * K + N * K, "linear_int_packed": M * K + N * K,
              "conv2d_int": B * C * H * H + O * C * KH * KH}[op]
    output = {"pack_weights": N * K, "pack_activations": M * K,
              "linear_int": 8 * M * N, "linear_int_packed": 8 * M * N,
              "conv2d_int": 8 * B * O * ho * ho}[op]
    return 4 * (inputs + output)


SLACK = 4 * MIB       # allocator granularity, a page table, interpreter bookkeeping

MEASURE = r"""
import json, sys, tracemalloc
import numpy as np
from backends import backend_from_id

backend_id, M, K, N, B, C, H, O, KH, PAD, A = sys.argv[1], *map(int, sys.argv[2:])
be = backend_from_id(backend_id)


def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))


rng = np.random.default_rng(0)
a = rng.integers(0, 256, (M, K), dtype=np.uint8)
a_bits = np.full(K, A, np.uint8)
w = rng.integers(0, 16, (N, K), dtype=np.uint8)
w_bits = np.full(N, 4, np.uint8)
w_bits[1::2] = 1
w[1::2] &= 1
x = rng.integers(0, 256, (B, C, H, H), dtype=np.uint8)
x_bits = np.full(C, A, np.uint8)
cw = rng.integers(0, 2, (O, C, KH, KH), dtype=np.uint8)
cw_bits = np.ones(O, np.uint8)
packed = be.pack_weights(w, w_bits)
ops = {
    "pack_weights": lambda: be.pack_weights(w, w_bits),
    "pack_activations": lambda: be.pack_activations(a, a_bits, A),
    "linear_int": lambda: be.linear_int(a, a_bits, w, w_bits, A),
    "linear_int_packed": lambda: be.linear_int(a, a_bits, packed, w_bits, A),
    "conv2d_int": lambda: be.conv2d_int(x, x_bits, cw, cw_bits, A, stride=1, padding=PAD),
}
for f in ops.values():          # warm up: lazy set-up, thread pools, caches
    f()
tracemalloc.start()
report = {}
for op, f in ops.items():
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")        # reset the peak resident set (VmHWM)
    resident = status("VmRSS")
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    out = f()
    traced = tracemalloc.get_traced_memory()[1] - base
    report[op] = {"traced": traced, "resident": status("VmHWM") - resident}
    del out
print(json.dumps(report))
"""


def _clear_refs_works() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def measured(backend_id, backend):              # backend: skips, with the reason, if unavailable
    name, variant, _ = parse_id(backend_id)
    if name == "cuda-emu" and variant != "forward":
        pytest.skip("the thread schedule does not change what the emulation allocates; "
                    "measured under cuda-emu:forward")
    if not _clear_refs_works():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak resident set; "
                    "run on Linux")
    return backend_id, _measure(backend_id)


@pytest.mark.parametrize("op", ["pack_weights", "pack_activations", "linear_int",
                                "linear_int_packed", "conv2d_int"])
def test_peak_allocation_within_the_documented_bound(measured, op):
    backend_id, report = measured
    bound = (ref_bound if backend_id == "ref" else kernel_bound)(op, **dims_for(backend_id))
    used = max(report[op]["traced"], report[op]["resident"])
    assert used <= bound + SLACK, \
        f"{backend_id} {op}: peak {used / MIB:.1f} MiB (traced " \
        f"{report[op]['traced'] / MIB:.1f}, resident {report[op]['resident'] / MIB:.1f}) " \
        f"exceeds the bound {bound / MIB:.1f} MiB"


def test_row_blocks_do_not_change_the_reference(monkeypatch):
    """The reference computes accumulators a block of rows (images) at a time; with
    blocks of one row the results still equal the independent int64 implementation."""
    rng = np.random.default_rng(3)
    k, n = 131, 9
    a = rng.integers(0, 256, (13, k), dtype=np.uint8)
    a_bits = rng.integers(1, 9, k).astype(np.uint8)
    a >>= (8 - a_bits)[None, :]
    w_bits = rng.integers(1, 9, n).astype(np.uint8)
    w = (rng.integers(0, 256, (n, k)) % (1 << w_bits.astype(np.int64))[:, None]).astype(np.uint8)
    x = rng.integers(0, 256, (5, 3, 7, 9), dtype=np.uint8)
    x_bits = np.array([8, 3, 1], np.uint8)
    x >>= (8 - x_bits)[None, :, None, None]
    cw = (rng.integers(0, 256, (4, 3, 3, 2)) % (1 << w_bits[:4].astype(np.int64))[:, None, None,
                                                                             None]).astype(np.uint8)
    expected_linear = independent.linear_acc(a, a_bits, w, w_bits, 8)
    expected_conv = independent.conv_acc(x, x_bits, cw, w_bits[:4], 8, 2, 1)
    for block in (1, 8 * k * 4, integer_core.BLOCK_BYTES):
        monkeypatch.setattr(integer_core, "BLOCK_BYTES", block)
        assert len(integer_core._blocks(13, 8 * k)) == (13 if block == 1 else
                                                       4 if block == 8 * k * 4 else 1)
        np.testing.assert_array_equal(integer_core.linear_int(a, a_bits, w, w_bits, 8),
                                      expected_linear)
        np.testing.assert_array_equal(
            integer_core.conv2d_int(x, x_bits, cw, w_bits[:4], 8, stride=2, padding=1),
            expected_conv)


def _measure(backend_id: str) -> dict:
    """Run MEASURE for ``backend_id`` in a fresh interpreter -> {op: {traced, resident}}.

    A fixed mmap threshold makes glibc return large blocks to the system when freed,
    so that one operation's peak is not hidden in memory freed by the one before."""
    dims = dims_for(backend_id)
    path = [str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), MALLOC_MMAP_THRESHOLD_="65536",
               OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", MEASURE, backend_id,
                           *(str(dims[key]) for key in "M K N B C H O KH PAD A".split())],
                          capture_output=True, text=True, env=env, timeout=120)
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1])
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    # python tests/test_memory.py: the figures of docs/reliability.md, as a table
    print("| backend | operation | traced MiB | resident MiB | bound MiB |")
    print("|---|---|---:|---:|---:|")
    for backend_id in ("ref", "cpu:scalar", "cpu:avx2", "cpu:avx512", "cuda-emu:forward",
                       "cuda"):
        try:
            report = _measure(backend_id)
        except RuntimeError as exc:
            print(f"| {backend_id} | not available: {exc} | | | |")
            continue
        for op, used in report.items():
            bound = (ref_bound if backend_id == "ref" else kernel_bound)(
                op, **dims_for(backend_id))
            print(f"| {backend_id} | {op} | {used['traced'] / MIB:.1f} | "
                  f"{used['resident'] / MIB:.1f} | {bound / MIB:.1f} |")
