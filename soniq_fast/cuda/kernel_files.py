"""Where the CUDA kernel sources live, and which file defines each kernel."""

from __future__ import annotations

import functools
from pathlib import Path

from .emu.signature import kernel_signatures

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"


def source_files() -> list[Path]:
    """Every .cu file, sorted (the compile checks build each one)."""
    return sorted(KERNEL_DIR.glob("*.cu"))


@functools.lru_cache(maxsize=None)
def kernel_file(name: str) -> Path:
    """The .cu file that defines the ``extern "C" __global__`` kernel ``name``."""
    for path in source_files():
        if name in kernel_signatures(path.read_text()):
            return path
    raise KeyError(f"no kernel named {name!r} in {KERNEL_DIR}")
