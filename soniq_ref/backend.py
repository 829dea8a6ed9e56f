"""Backends: one contract, several implementations.

A backend is an object with the functions named in :data:`CONTRACT`, each with
the signature of the reference function of the same name (docs/backend-contract.md).
``ref`` is this package. Fast backends live in the separate ``soniq_fast``
package and are imported only when asked for by name, so the reference never
needs a compiler or a GPU.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from .bitpack import pack_activations, pack_weights
from .epilogue import epilogue, requantize
from .integer_core import conv2d_int, linear_int

CONTRACT = ("pack_weights", "pack_activations", "linear_int", "conv2d_int",
            "epilogue", "requantize")

REF = SimpleNamespace(name="ref", pack_weights=pack_weights, pack_activations=pack_activations,
                      linear_int=linear_int, conv2d_int=conv2d_int, epilogue=epilogue,
                      requantize=requantize)

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
