"""Every CUDA kernel compiles for sm_80, sm_86, sm_89 and sm_90 without a GPU, and
ptxas reports no register spills.

NVRTC (the nvidia-cuda-nvrtc-cu12 wheel of the test extra) is what CI relies on;
nvcc is checked too where a CUDA toolkit is installed. A compiler that cannot be
found is skipped with the reason.
"""

import pytest

from soniq_fast.cuda.emu.signature import kernel_signatures
from soniq_fast.cuda.kernel_files import KERNEL_DIR, source_files
from soniq_fast.cuda.runtime.gpu import NVRTC_OPTIONS
from soniq_fast.cuda.toolchain import (find_nvcc, find_nvrtc, nvcc_compile, nvrtc_compile,
                                       parse_ptxas_report)

ARCHS = ["sm_80", "sm_86", "sm_89", "sm_90"]
SOURCES = source_files()


def _compile(compiler, path, arch):
    if compiler == "nvrtc":
        if find_nvrtc() is None:
            pytest.skip("NVRTC not found: pip install -e '.[test]' (nvidia-cuda-nvrtc-cu12) runs this")
        return nvrtc_compile(path, arch, [str(KERNEL_DIR)], NVRTC_OPTIONS)
    if find_nvcc() is None:
        pytest.skip("nvcc not found: a CUDA toolkit on PATH runs this (NVRTC covers CI)")
    return nvcc_compile(path, arch, [str(KERNEL_DIR)], ["-std=c++14", "-fmad=false"])


def test_every_kernel_file_is_checked():
    assert {p.name for p in SOURCES} >= {"pack_acts.cu", "bitserial_gemm.cu", "mma_gemm.cu",
                                         "int8_gemm.cu", "epilogue.cu", "mma_probe.cu"}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
@pytest.mark.parametrize("compiler", ["nvrtc", "nvcc"])
def test_compiles_without_spills(compiler, path, arch):
    cubin, log = _compile(compiler, path, arch)
    assert cubin, "empty cubin"
    report = parse_ptxas_report(log)
    kernels = set(kernel_signatures(path.read_text()))
    assert set(report.kernels) == kernels, (f"ptxas reported {sorted(report.kernels)}, the source "
                                            f"defines {sorted(kernels)}:\n{log}")
    assert not report.spills(), f"register spills (store, load bytes) for {arch}: {report.spills()}"


def test_tensor_core_path_emits_b1_mma():
    # sm_80+ builds must use the hardware instruction, not the emulation model
    if find_nvrtc() is None:
        pytest.skip("NVRTC not found: pip install -e '.[test]' (nvidia-cuda-nvrtc-cu12) runs this")
    ptx, _ = nvrtc_compile(KERNEL_DIR / "mma_gemm.cu", "compute_80", [str(KERNEL_DIR)],
                           NVRTC_OPTIONS)
    text = ptx.decode(errors="replace")
    assert "mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc" in text
    assert "frag_a" not in text   # the shared-memory model is compiled out


def test_epilogue_has_no_fused_multiply_add():
    if find_nvrtc() is None:
        pytest.skip("NVRTC not found: pip install -e '.[test]' (nvidia-cuda-nvrtc-cu12) runs this")
    ptx, _ = nvrtc_compile(KERNEL_DIR / "epilogue.cu", "compute_80", [str(KERNEL_DIR)],
                           NVRTC_OPTIONS)
    text = ptx.decode(errors="replace")
    assert "mul.rn.f32" in text and "add.rn.f32" in text
    assert "fma" not in text
    assert "cvt.rni.f32.f32" in text   # rintf: round half to even


@pytest.mark.parametrize("path", SOURCES, ids=[p.name for p in SOURCES])
def test_compiles_warning_free_for_the_emulation(path, tmp_path):
    # the same source through the system C++ compiler and cuda_emu.h, strict warnings
    import subprocess
    from soniq_fast.cuda.emu.build import EMU_DIR, compiler
    wrapper = tmp_path / "wrapper.cpp"
    wrapper.write_text(f'#include "cuda_emu.h"\n#include "{path.name}"\n')
    result = subprocess.run([compiler()[0], "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra",
                             "-Werror", "-Wno-unknown-pragmas", f"-I{EMU_DIR}", f"-I{KERNEL_DIR}",
                             str(wrapper)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
