"""nvcc, when a CUDA toolkit is installed: compile CUDA source to a cubin."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path


def find_nvcc():
    """Path of nvcc on PATH (or under CUDA_HOME / /usr/local/cuda), or None."""
    import os
    for candidate in (shutil.which("nvcc"),
                      os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def nvcc_compile(path: Path, arch: str, include_dirs=(), options=()) -> tuple[bytes, str]:
    """Compile ``path`` for ``arch`` (e.g. 'sm_80'); return (cubin, ptxas log)."""
    nvcc = find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found")
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "kernel.cubin"
        cmd = [nvcc, f"-arch={arch}", "-cubin", "-Xptxas", "-v", *options,
               *[f"-I{d}" for d in include_dirs], str(path), "-o", str(out)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc failed to compile {Path(path).name} for {arch}:\n"
                               f"{result.stderr}")
        return out.read_bytes(), result.stdout + result.stderr
