"""Runtimes the launchers run on: the CPU emulation (NumPy arrays) or a GPU (CuPy).

Both offer the same small interface -- ``function(name)``, ``to_device``,
``constant``, ``empty``, ``to_host`` and ``compute_capability`` -- so every launcher is written
once and the emulated tests exercise the exact launch code the GPU runs.
"""

from .emulated import EmulatedRuntime

__all__ = ["EmulatedRuntime"]
