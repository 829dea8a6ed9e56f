"""``EmuModule`` / ``EmuFunction``: ``cupy.RawModule``'s calling style on the CPU.

``EmuModule(code=src, options=("-I", kernel_dir))`` compiles ``src`` (unchanged
CUDA) with the system C++ compiler against ``cuda_emu.h``;
``module.get_function(name)(grid, block, args)`` runs kernel ``name`` on the
emulation runtime. Pointer arguments are NumPy arrays (or ``None`` for a null
pointer); scalar arguments must have the parameter's exact type, as a real launch
needs (NumPy scalars; a Python int only for a 64-bit integer, a float for double). Threads run in ``schedule`` order: ``forward``,
``reverse`` or ``random`` (seeded; each launch draws the next seed). Arrays are
passed as guarded copies (guard.py), so a write out of bounds is an error.
"""

from __future__ import annotations

import ctypes
import itertools
from pathlib import Path

import numpy as np

from .build import build_library
from .guard import GuardedArray
from .signature import Param, kernel_signatures

SCHEDULES = {"forward": 0, "reverse": 1, "random": 2}
_ERROR_BYTES = 1024
_loaded: dict[Path, ctypes.CDLL] = {}


class EmuLaunchError(RuntimeError):
    """A kernel broke a CUDA rule under emulation (e.g. a barrier in divergent code)."""


def _include_dirs(options) -> tuple[str, ...]:
    dirs, options = [], list(options)
    for i, opt in enumerate(options):
        if opt == "-I" and i + 1 < len(options):
            dirs.append(str(Path(options[i + 1]).resolve()))
        elif opt.startswith("-I") and len(opt) > 2:
            dirs.append(str(Path(opt[2:]).resolve()))
    return tuple(dirs)


def _wrapper(code: str, names) -> str:
    exports = "".join(
        f'extern "C" __attribute__((visibility("default"))) int soniq_emu_launch_{n}(const unsigned* g, const unsigned* b, void** a, '
        f"int s, unsigned long long seed, char* e, int len) "
        f"{{ return ::soniq_emu::launch({n}, g, b, a, s, seed, e, len); }}\n" for n in names)
    return f'#include "cuda_emu.h"\n#line 1 "kernel.cu"\n{code}\n#line 1 "emu_exports"\n{exports}'


class EmuModule:
    """A compiled kernel source; see the module docstring."""

    def __init__(self, code: str | None = None, path: str | None = None, options=(),
                 schedule: str = "forward", seed: int = 0):
        if (code is None) == (path is None):
            raise TypeError("give exactly one of code or path")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        if path is not None:
            code = Path(path).read_text()
            options = tuple(options) + ("-I", str(Path(path).resolve().parent))
        self.signatures = kernel_signatures(code)
        library = build_library(_wrapper(code, self.signatures), _include_dirs(options))
        if library not in _loaded:
            _loaded[library] = ctypes.CDLL(str(library))
        self._lib = _loaded[library]
        self.schedule = schedule
        self._seeds = itertools.count(seed)

    def get_function(self, name: str) -> "EmuFunction":
        if name not in self.signatures:
            raise AttributeError(f"no extern \"C\" __global__ kernel named {name!r} in this module")
        entry = getattr(self._lib, f"soniq_emu_launch_{name}")
        entry.restype = ctypes.c_int
        return EmuFunction(name, self.signatures[name], entry, self)


def _dims(name: str, value) -> ctypes.Array:
    dims = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not 1 <= len(dims) <= 3 or any(int(d) < 1 for d in dims):
        raise ValueError(f"{name} must be 1 to 3 positive sizes, got {value!r}")
    return (ctypes.c_uint * 3)(*(tuple(int(d) for d in dims) + (1, 1))[:3])


_NUMPY_TYPES = {ctypes.c_int32: np.int32, ctypes.c_uint32: np.uint32, ctypes.c_int64: np.int64,
                ctypes.c_uint64: np.uint64, ctypes.c_uint8: np.uint8, ctypes.c_float: np.float32,
                ctypes.c_double: np.float64}


def _check_scalar_type(param: Param, value) -> None:
    """Refuse what CuPy would pass wrongly: its raw launch copies a NumPy scalar's bytes
    as they are and passes a Python int as 64-bit, a Python float as double."""
    expected = np.dtype(_NUMPY_TYPES[param.ctype])
    if isinstance(value, np.generic):
        given = value.dtype
    elif isinstance(value, (bool, np.bool_)):
        given = np.dtype(bool)
    elif isinstance(value, int):
        given = np.dtype(np.int64)
    elif isinstance(value, float):
        given = np.dtype(np.float64)
    else:
        raise TypeError(f"kernel argument {param.name} must be a number, got {type(value).__name__}")
    if given != expected:
        raise TypeError(f"kernel argument {param.name} is {given} but the kernel takes "
                        f"{expected} (pass np.{expected.name}(...))")


def _marshal(param: Param, value):
    """(the ctypes object whose address the kernel receives, its GuardedArray or None)."""
    if param.pointer:
        if value is None:
            return ctypes.c_void_p(None), None
        if not isinstance(value, np.ndarray) or not value.flags.c_contiguous:
            raise TypeError(f"kernel argument {param.name} must be a C-contiguous NumPy array")
        if not param.const and not value.flags.writeable:
            raise ValueError(f"kernel argument {param.name} is written to but is read-only")
        guarded = GuardedArray(value)
        return ctypes.c_void_p(guarded.address), guarded
    _check_scalar_type(param, value)
    if param.ctype in (ctypes.c_float, ctypes.c_double):
        return param.ctype(float(value)), None
    number = int(value)
    bits = ctypes.sizeof(param.ctype) * 8
    signed = param.ctype(-1).value < 0
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= number <= high:
        raise ValueError(f"kernel argument {param.name}={number} does not fit its C type")
    return param.ctype(number), None


class EmuFunction:
    """One kernel of an :class:`EmuModule`; call it as ``f(grid, block, args)``."""

    def __init__(self, name, params, entry, module):
        self.name, self.params, self._entry, self._module = name, params, entry, module

    def __call__(self, grid, block, args, shared_mem: int = 0):
        if len(args) != len(self.params):
            raise TypeError(f"kernel {self.name} takes {len(self.params)} arguments, "
                            f"got {len(args)}")
        values, guards = zip(*[_marshal(p, v) for p, v in zip(self.params, args)]) \
            if args else ((), ())
        pointers = (ctypes.c_void_p * max(1, len(values)))(
            *[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
        error = ctypes.create_string_buffer(_ERROR_BYTES)
        status = self._entry(_dims("grid", grid), _dims("block", block), pointers,
                             SCHEDULES[self._module.schedule],
                             ctypes.c_ulonglong(next(self._module._seeds)), error,
                             ctypes.c_int(_ERROR_BYTES))
        if status:
            raise EmuLaunchError(f"kernel {self.name}: {error.value.decode()}")
        for param, guarded in zip(self.params, guards):
            if guarded is None:
                continue
            where = guarded.violation()
            if where:
                raise EmuLaunchError(f"kernel {self.name} wrote {where} of argument {param.name}")
            if not param.const:
                guarded.copy_back()
