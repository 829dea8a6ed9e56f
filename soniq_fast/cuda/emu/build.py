"""Compile kernel source against the emulation header into a cached shared library.

The library for a source is keyed by the SHA-256 of everything that can change
it: the wrapper text (which embeds the kernel source), every header in the
include directories, the compiler's identity and the flags. It lives in
``$XDG_CACHE_HOME/soniq/cuda-emu/`` (default ``~/.cache/soniq/cuda-emu/``) and is
written to a temporary name first, then renamed, so concurrent builds never
load a half-written file.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

EMU_DIR = Path(__file__).resolve().parent
# hidden visibility and no GNU-unique symbols keep each library's runtime state (the
# current launch, threadIdx, shared memory) its own, whatever else the process loads
FLAGS = ("-std=c++17", "-O2", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared",
         "-fvisibility=hidden", "-fno-gnu-unique")


def cache_dir() -> Path:
    """The directory for compiled emulation libraries (created on demand)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    path = Path(root) / "soniq" / "cuda-emu"
    path.mkdir(parents=True, exist_ok=True)
    return path


@functools.lru_cache(maxsize=None)
def compiler() -> tuple[str, str]:
    """(path, version line) of the C++ compiler: $CXX, else g++, else c++."""
    for candidate in (os.environ.get("CXX"), "g++", "c++"):
        if candidate and shutil.which(candidate):
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True,
                                     check=True).stdout.splitlines()[0]
            return shutil.which(candidate), version
    raise RuntimeError("no C++ compiler found (set CXX or install g++) to build the CUDA emulation")


def _headers(include_dirs: tuple[str, ...]) -> list[Path]:
    files = []
    for directory in (str(EMU_DIR),) + include_dirs:
        files += sorted(p for p in Path(directory).iterdir()
                        if p.suffix in (".h", ".cuh", ".cu") and p.is_file())
    return files


def content_hash(wrapper: str, include_dirs: tuple[str, ...]) -> str:
    digest = hashlib.sha256()
    digest.update(wrapper.encode())
    for path in _headers(include_dirs):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(" ".join(compiler() + FLAGS).encode())
    return digest.hexdigest()[:32]


def build_library(wrapper: str, include_dirs: tuple[str, ...]) -> Path:
    """Return the path of the shared library for ``wrapper``, compiling it if not cached."""
    target = cache_dir() / f"{content_hash(wrapper, include_dirs)}.so"
    if target.exists():
        return target
    cxx, _ = compiler()
    with tempfile.TemporaryDirectory(dir=cache_dir(), prefix="build-") as work:
        source = Path(work) / "kernel_emu.cpp"
        source.write_text(wrapper)
        output = Path(work) / "kernel_emu.so"
        includes = [f"-I{d}" for d in (str(EMU_DIR),) + include_dirs]
        result = subprocess.run([cxx, *FLAGS, *includes, str(source), "-o", str(output)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"emulation build failed:\n{result.stderr[-4000:]}")
        os.replace(output, target)
    return target
