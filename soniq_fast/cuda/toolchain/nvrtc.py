"""NVRTC through ctypes: compile CUDA source to a cubin for one architecture.

The library comes from the ``nvidia-cuda-nvrtc-cu12`` wheel (or a system CUDA
install); no GPU and no CUDA driver are needed.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from pathlib import Path


@functools.lru_cache(maxsize=None)
def find_nvrtc():
    """The loaded libnvrtc (ctypes.CDLL), or None when it cannot be found."""
    candidates = []
    try:
        import nvidia.cuda_nvrtc as wheel
        for root in wheel.__path__:
            candidates += sorted(glob.glob(os.path.join(root, "lib", "libnvrtc.so*")))
    except ImportError:
        pass
    candidates += ["libnvrtc.so", "libnvrtc.so.12", "libnvrtc.so.13"]
    for path in candidates:
        if "builtins" in path or ".alt." in path:
            continue
        try:
            return ctypes.CDLL(path)
        except OSError:
            continue
    return None


def _check(lib, status: int, what: str) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def nvrtc_compile(path: Path, arch: str, include_dirs=(), options=()) -> tuple[bytes, str]:
    """Compile ``path`` for ``arch`` (e.g. 'sm_80'); return (cubin, log).

    With a virtual architecture (e.g. 'compute_80') the first item is the PTX text instead.

    Raises RuntimeError with the compiler log when compilation fails.
    """
    lib = find_nvrtc()
    if lib is None:
        raise RuntimeError("NVRTC not found (pip install nvidia-cuda-nvrtc-cu12)")
    program = ctypes.c_void_p()
    source = Path(path).read_bytes()
    _check(lib, lib.nvrtcCreateProgram(ctypes.byref(program), source, Path(path).name.encode(),
                                       0, None, None), "nvrtcCreateProgram")
    try:
        real = arch.startswith("sm_")
        args = [f"--gpu-architecture={arch}", *(["--ptxas-options=-v"] if real else []), *options,
                *[f"--include-path={d}" for d in include_dirs]]
        argv = (ctypes.c_char_p * len(args))(*[a.encode() for a in args])
        status = lib.nvrtcCompileProgram(program, len(args), argv)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(program, log)
        log_text = log.value.decode(errors="replace")
        if status != 0:
            raise RuntimeError(f"NVRTC failed to compile {Path(path).name} for {arch}:\n{log_text}")
        kind = "CUBIN" if real else "PTX"
        getattr(lib, f"nvrtcGet{kind}Size")(program, ctypes.byref(size))
        output = ctypes.create_string_buffer(size.value)
        _check(lib, getattr(lib, f"nvrtcGet{kind}")(program, output), f"nvrtcGet{kind}")
        return output.raw, log_text
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(program))
