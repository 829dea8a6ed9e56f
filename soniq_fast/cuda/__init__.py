"""soniq_fast.cuda -- SONIQ's CUDA kernels, on a GPU or on the CPU emulation runtime.

``EMU_BACKEND`` runs the unmodified kernels (kernels/*.cu) on the CPU emulation
runtime (emu/cuda_emu.h); ``EMU_BACKEND.variant('forward' | 'reverse' | 'random')``
picks the thread schedule. ``BACKEND`` runs them on the GPU through
``cupy.RawModule``; it is created on first access, which raises ImportError or
RuntimeError saying what is missing (CuPy, a device) -- unless the environment
variable ``SONIQ_CUDA_EMULATE=1`` is set, in which case it is the emulated backend.
Importing this package needs neither CuPy nor a GPU.
"""

import os

from .backend import CudaBackend
from .packed import CudaPackedWeights
from .runtime.emulated import EmulatedRuntime

EMU_BACKEND = CudaBackend(EmulatedRuntime("forward"), "cuda-emu:forward")

__all__ = ["BACKEND", "EMU_BACKEND", "CudaBackend", "CudaPackedWeights"]

_gpu_backend = None


def __getattr__(name):
    global _gpu_backend
    if name != "BACKEND":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if os.environ.get("SONIQ_CUDA_EMULATE") == "1":
        return EMU_BACKEND
    if _gpu_backend is None:
        from .runtime.gpu import GpuRuntime
        _gpu_backend = CudaBackend(GpuRuntime(), "cuda")
    return _gpu_backend
