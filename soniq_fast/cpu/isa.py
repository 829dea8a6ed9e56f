"""Code paths (ISAs) of the cpu kernels and the settings read from the environment.

``scalar`` is portable C; ``avx2`` needs AVX2; ``avx512`` needs AVX-512 F/BW with
VPOPCNTDQ (popcount engine) and VNNI (int8 engine). The best one this CPU runs is
the default; ``SONIQ_CPU_ISA`` or ``variant(name)`` pins one on purpose.
"""

from __future__ import annotations

import os

from . import _kernels

ISA_NAMES = ("scalar", "avx2", "avx512")
ISA_ENV = "SONIQ_CPU_ISA"
THREADS_ENV = "SONIQ_NUM_THREADS"
MAX_THREADS = 1024


def supported(name: str) -> bool:
    """Whether this CPU can run code path ``name``."""
    return bool(_kernels.cpu_has(ISA_NAMES.index(name)))


def has_vbmi() -> bool:
    """Whether the avx512 path can use AVX-512 VBMI (the lut engine's 64-entry tables)."""
    return bool(_kernels.cpu_has(_kernels.VBMI_FEATURE))


def best_isa() -> str:
    """The fastest code path this CPU runs."""
    return [name for name in ISA_NAMES if supported(name)][-1]


def check_isa(name, source: str = "isa") -> int:
    """Index of code path ``name``; ValueError if unknown, RuntimeError if this CPU lacks it."""
    if name not in ISA_NAMES:
        raise ValueError(f"{source} must be one of {', '.join(ISA_NAMES)}, got {name!r}")
    if not supported(name):
        raise RuntimeError(f"this CPU cannot run the {name} code path "
                           f"(it lacks the instructions; best available: {best_isa()})")
    return ISA_NAMES.index(name)


def check_threads(value, source: str = "num_threads") -> int:
    """A thread count: an integer in 1..MAX_THREADS."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{source} must be an integer in 1..{MAX_THREADS}, got {value!r}")
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"{source} must be in 1..{MAX_THREADS}, got {value}")
    return value


def isa_from_env() -> str:
    """``SONIQ_CPU_ISA`` when set (and runnable here), else the best path."""
    name = os.environ.get(ISA_ENV, "").strip()
    if not name:
        return best_isa()
    check_isa(name, source=ISA_ENV)
    return name


def threads_from_env() -> int:
    """``SONIQ_NUM_THREADS`` when set, else the CPUs this process may run on."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    try:
        count = int(value)
    except ValueError:
        raise ValueError(f"{THREADS_ENV} must be an integer in 1..{MAX_THREADS}, "
                         f"got {value!r}") from None
    return check_threads(count, source=THREADS_ENV)
