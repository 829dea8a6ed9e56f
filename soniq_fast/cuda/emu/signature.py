"""Kernel signatures read from CUDA source: which ``extern "C" __global__`` kernels
a file defines and the C type of each parameter, so a launch can marshal its
arguments the way the CUDA driver would (one pointer per argument value).
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass

_KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?'
                     r'(\w+)\s*\(([^)]*)\)')
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)

# scalar C types (after dropping const / __restrict__) -> ctypes type
_SCALARS = {
    "int": ctypes.c_int32, "i32": ctypes.c_int32, "int32_t": ctypes.c_int32,
    "unsigned": ctypes.c_uint32, "unsigned int": ctypes.c_uint32, "u32": ctypes.c_uint32,
    "uint32_t": ctypes.c_uint32,
    "long long": ctypes.c_int64, "i64": ctypes.c_int64, "int64_t": ctypes.c_int64,
    "unsigned long long": ctypes.c_uint64, "u64": ctypes.c_uint64, "uint64_t": ctypes.c_uint64,
    "u8": ctypes.c_uint8, "unsigned char": ctypes.c_uint8,
    "float": ctypes.c_float, "double": ctypes.c_double,
}


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its name, whether it is a pointer, and its ctypes type."""

    name: str
    pointer: bool
    const: bool
    ctype: type | None      # None for pointers


def _param(text: str) -> Param:
    text = " ".join(text.replace("*", " * ").split())
    *type_words, name = text.split(" ")
    pointer = "*" in type_words
    const = "const" in type_words
    base = " ".join(w for w in type_words if w not in ("const", "*", "__restrict__"))
    if pointer:
        return Param(name, True, const, None)
    if base not in _SCALARS:
        raise ValueError(f"kernel parameter {name!r} has unsupported type {base!r}")
    return Param(name, False, const, _SCALARS[base])


def kernel_signatures(source: str) -> dict[str, tuple[Param, ...]]:
    """``{kernel name: parameters}`` for every ``extern "C" __global__`` kernel in ``source``."""
    source = _COMMENT.sub(" ", source)
    found = {}
    for match in _KERNEL.finditer(source):
        params = [p for p in match.group(2).split(",") if p.strip() and p.strip() != "void"]
        found[match.group(1)] = tuple(_param(p) for p in params)
    return found
