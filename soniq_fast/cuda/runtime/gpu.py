"""The GPU runtime: the same kernels through ``cupy.RawModule`` on a real device."""

from __future__ import annotations

import numpy as np

from ..kernel_files import KERNEL_DIR, kernel_file

NVRTC_OPTIONS = ("--std=c++14", "--fmad=false")


def load_cupy():
    """Import CuPy and check for a device; raise ImportError / RuntimeError saying what is missing."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("CuPy is not installed (pip install cupy-cuda12x); "
                          "SONIQ_CUDA_EMULATE=1 runs the kernels on the CPU emulation") from exc
    if not cupy.is_available():
        raise RuntimeError("CuPy found no usable CUDA device; "
                           "SONIQ_CUDA_EMULATE=1 runs the kernels on the CPU emulation")
    return cupy


class GpuRuntime:
    """Runs kernels on the current CUDA device; arrays are CuPy arrays."""

    name = "gpu"

    def __init__(self, extra_options=()):
        """``extra_options``: more NVRTC options, e.g. ``("-DMMA_CHAIN=0",)`` to time a
        kernel variant (benchmarks/cuda_gemm.py --define)."""
        self.cp = load_cupy()
        self.options = NVRTC_OPTIONS + tuple(extra_options) + ("-I" + str(KERNEL_DIR),)
        self.compute_capability = int(self.cp.cuda.Device().compute_capability)  # e.g. "80"
        self._modules = {}
        self._constants = {}

    def function(self, name: str):
        path = kernel_file(name)
        if path.name not in self._modules:
            self._modules[path.name] = self.cp.RawModule(code=path.read_text(),
                                                         options=self.options)
        return self._modules[path.name].get_function(name)

    def to_device(self, array):
        return self.cp.ascontiguousarray(self.cp.asarray(array))

    def constant(self, array: np.ndarray):
        """A device copy of a small, never-written array, uploaded once per distinct value
        (geometry vectors): a host-to-device copy costs more than a small kernel."""
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = self.to_device(array)
        return self._constants[key]

    def empty(self, shape, dtype):
        return self.cp.empty(shape, dtype)

    def to_host(self, array) -> np.ndarray:
        return self.cp.asnumpy(array)
