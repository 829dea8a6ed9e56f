"""Where the CUDA kernel sources live, and which kernels each file defines."""

from pathlib import Path

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"

# kernel name -> the .cu file that defines it
KERNELS = {
    "pack_planes": "pack_acts.cu",
    "plane_row_sums": "pack_acts.cu",
    "bitserial_gemm": "bitserial_gemm.cu",
    "mma_gemm": "mma_gemm.cu",
    "int8_gemm": "int8_gemm.cu",
    "epilogue_f32": "epilogue.cu",
    "requantize_u8": "epilogue.cu",
    "mma_probe": "mma_probe.cu",
}


def source_files() -> list[Path]:
    """Every .cu file, sorted (the compile checks build each one)."""
    return sorted(KERNEL_DIR.glob("*.cu"))
