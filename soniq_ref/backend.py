"""Backends: one contract, several implementations.

A backend is a :class:`~soniq_ref.contract.CheckedBackend` around its kernels: the
functions named in :data:`CONTRACT`, each with the signature of the reference function
of the same name (docs/backend-contract.md), validated once by the wrapper. ``ref`` is
this package's kernels. Fast backends live in the separate ``soniq_fast`` package and
are imported only when asked for by name, so the reference never needs a compiler or a GPU.
"""

from __future__ import annotations

import importlib

from .bitpack import activation_planes, packed_weights
from .contract import CONTRACT, CheckedBackend
from .epilogue import affine, requantize_codes
from .integer_core import conv2d_acc, linear_acc

__all__ = ["CONTRACT", "NAMES", "REF", "ReferenceKernels", "get_backend"]


class ReferenceKernels:
    """The reference's kernels (NumPy, int64 accumulators, no K limit), on validated
    arguments; weights reach them as validated uint8 codes with their bits."""

    name = "ref"
    packed_type = None          # a PackedWeights is unpacked to codes by the wrapper
    max_k = None

    @staticmethod
    def weights(w_codes, w_bits):
        return w_codes

    pack_weights = staticmethod(packed_weights)
    pack_activations = staticmethod(activation_planes)
    linear_int = staticmethod(linear_acc)
    conv2d_int = staticmethod(conv2d_acc)
    epilogue = staticmethod(affine)
    requantize = staticmethod(requantize_codes)


REF = CheckedBackend("ref", ReferenceKernels())
# name -> (module, attribute holding the backend object, how to get it)
_FAST = {
    "cpu": ("soniq_fast.cpu", "BACKEND",
            'it was not built: install a C compiler and the Python headers (Debian/Ubuntu: '
            'apt-get install build-essential python3-dev), then pip install -e . again'),
    "cuda": ("soniq_fast.cuda", "BACKEND",
             "install CuPy for your CUDA version, or use backend 'cuda-emu' to run the "
             "kernels on the CPU emulation runtime"),
    "cuda-emu": ("soniq_fast.cuda", "EMU_BACKEND", "needs a C++ compiler (g++)"),
}

NAMES = ("ref",) + tuple(_FAST)


def get_backend(name: str = "ref"):
    """Return the backend called ``name`` (one of :data:`NAMES`).

    Raises ValueError for an unknown name and RuntimeError, saying how to fix it,
    when a known backend cannot be loaded on this machine.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name string, got {type(name).__name__}")
    if name == "ref":
        return REF
    if name not in _FAST:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(NAMES)}")
    module_name, attribute, how = _FAST[name]
    try:
        module = importlib.import_module(module_name)
        backend = getattr(module, attribute)
    except (ImportError, AttributeError, OSError) as exc:
        raise RuntimeError(f"backend {name!r} is not available ({exc}); {how}") from exc
    if callable(backend) and not hasattr(backend, "linear_int"):
        backend = backend()   # a factory that does its set-up work on first use
    return backend
