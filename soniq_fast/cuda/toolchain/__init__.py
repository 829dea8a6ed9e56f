"""Ahead-of-time compilers for the compile checks: NVRTC (from the nvidia-cuda-nvrtc
wheel, through ctypes) and nvcc. Neither needs a GPU."""

from .ptxas_report import PtxasReport, parse_ptxas_report
from .nvrtc import find_nvrtc, nvrtc_compile
from .nvcc import find_nvcc, nvcc_compile

__all__ = ["PtxasReport", "parse_ptxas_report", "find_nvrtc", "nvrtc_compile", "find_nvcc",
           "nvcc_compile"]
