"""The cuda backend object: the CUDA kernels on a runtime, behind the reference's checking
wrapper (:class:`soniq_ref.contract.CheckedBackend`).

``CudaBackend(runtime)`` runs on the CPU emulation (``EmulatedRuntime``) or a GPU
(``GpuRuntime``); the validation and launch code are the same for both. Results
are NumPy arrays; inputs may be NumPy or CuPy arrays.
"""

from __future__ import annotations

import numpy as np

from soniq_ref.contract import INT32_EXACT_K, CheckedBackend

from .launch import epilogue as epilogue_launch
from .launch.engines import ENGINE_ALIASES, ENGINES
from .launch.gemm import integer_gemm
from .launch.geometry import conv_geometry, linear_geometry
from .launch.pack import pack_planes, pack_weight_codes
from .packed import CudaPackedWeights
from .emu import SCHEDULES
from .runtime.emulated import EmulatedRuntime


class CudaBackend(CheckedBackend):
    """The contract (docs/backend-contract.md) on ``runtime``; ``engine`` pins the GEMM engine."""

    engines = ENGINES

    def __init__(self, runtime, name: str, engine: str = "auto"):
        engine = ENGINE_ALIASES.get(engine, engine)
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        super().__init__(name, CudaKernels(runtime, engine))
        self.runtime, self.engine = runtime, engine

    def __repr__(self):
        return f"<soniq cuda backend {self.name} engine={self.engine}>"

    @property
    def variants(self) -> tuple:
        """The thread schedules of the emulation (none on a GPU)."""
        return tuple(SCHEDULES) if isinstance(self.runtime, EmulatedRuntime) else ()

    def variant(self, name: str) -> "CudaBackend":
        """The emulated backend pinned to a thread schedule: forward, reverse or random."""
        if not isinstance(self.runtime, EmulatedRuntime):
            raise ValueError(f"backend {self.name} runs on a GPU and has no schedule variants")
        runtime = EmulatedRuntime(schedule=name, seed=self.runtime.seed,
                                  compute_capability=self.runtime.compute_capability)
        return CudaBackend(runtime, f"cuda-emu:{name}", self.engine)

    def with_engine(self, engine: str) -> "CudaBackend":
        """The same backend with every weight row on one engine (auto, cuda-core, popcount,
        mma, int8; ``bitserial`` is accepted for ``popcount``)."""
        return CudaBackend(self.runtime, self.name, engine)


class CudaKernels:
    """The CUDA kernels on ``runtime`` (the kernel protocol of :mod:`soniq_ref.contract`:
    arguments already validated). Weights given as codes are packed on the device only
    when there is work to do."""

    packed_type = CudaPackedWeights
    max_k = INT32_EXACT_K      # the kernels accumulate in 32 bits

    def __init__(self, runtime, engine: str):
        self.runtime, self.engine = runtime, engine

    # ------------------------------------------------------------------ packing

    def pack_weights(self, w_codes, w_bits) -> CudaPackedWeights:
        """uint8 codes [N, K] or [O, C, kh, kw] and bits [N] -> CudaPackedWeights."""
        return pack_weight_codes(self.runtime, w_codes, w_bits)

    @staticmethod
    def weights(w_codes, w_bits) -> tuple:
        return w_codes, w_bits      # packed in _packed, once the shapes say there is work

    def _packed(self, weights) -> CudaPackedWeights:
        if isinstance(weights, CudaPackedWeights):
            return weights
        return self.pack_weights(*weights)

    def pack_activations(self, a_codes, a_bits, act_bits_hi) -> np.ndarray:
        """uint64 [M, A, ceil(K/64)]: plane i holds bit i of a << (A - a_bits), LSB first."""
        m, k = a_codes.shape
        rt = self.runtime
        if m == 0:
            return np.zeros((0, act_bits_hi, (k + 63) // 64), np.uint64)
        shift = rt.to_device((act_bits_hi - a_bits).astype(np.uint8))
        planes = pack_planes(rt, rt.to_device(a_codes), shift, linear_geometry(k), m, k,
                             act_bits_hi)
        return rt.to_host(planes)

    # ------------------------------------------------------------- integer core

    def linear_int(self, a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
        """int64 [M, N]: sum_c (2 w[o,c] - (2^bw[o] - 1)) * (a[m,c] << (A - a_bits[c]))."""
        shape = _shape(w_codes)
        m, n = a_codes.shape[0], shape[0]
        if m == 0 or n == 0:
            return np.zeros((m, n), np.int64)
        rt = self.runtime
        shift = rt.to_device((act_bits_hi - a_bits).astype(np.uint8))
        acc = integer_gemm(rt, self.engine, rt.to_device(a_codes), shift,
                           linear_geometry(shape[1]), m, act_bits_hi, self._packed(w_codes), 1)
        return rt.to_host(acc).reshape(m, n)

    def conv2d_int(self, x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride, padding):
        """int64 [B, O, Ho, Wo], the conv2d accumulator as an implicit GEMM (groups = 1)."""
        o, c, kh, kw = _shape(w_codes)
        b, _, h, w = x_codes.shape
        ho = (h + 2 * padding - kh) // stride + 1
        wo = (w + 2 * padding - kw) // stride + 1
        if b == 0 or o == 0:
            return np.zeros((b, o, ho, wo), np.int64)
        rt = self.runtime
        shift = rt.to_device((act_bits_hi - a_bits).astype(np.uint8))
        geometry = conv_geometry(c, h, w, kh, kw, stride, padding, ho, wo)
        acc = integer_gemm(rt, self.engine, rt.to_device(x_codes), shift, geometry,
                           b * ho * wo, act_bits_hi, self._packed(w_codes), ho * wo)
        return rt.to_host(acc).reshape(b, o, ho, wo)

    # ----------------------------------------------------------------- epilogue

    def epilogue(self, acc, scale, bias) -> np.ndarray:
        """float32 like acc: scale[o] * float32(acc) + bias[o], one multiply then one add."""
        if acc.size == 0:
            return np.zeros(acc.shape, np.float32)
        return self.runtime.to_host(epilogue_launch.epilogue(self.runtime, acc, scale, bias))

    def requantize(self, acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc: clip(rint(epilogue * out_ratio[o]), 0, 2^out_bits[o] - 1)."""
        if acc.size == 0:
            return np.zeros(acc.shape, np.uint8)
        return self.runtime.to_host(
            epilogue_launch.requantize(self.runtime, acc, scale, bias, out_bits, out_ratio))

    def residual_requantize(self, acc, scale, bias, skip, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc [B, O, H, W]: the residual tail of
        :mod:`soniq_ref.stages.residual`, ``clip(rint(((scale[o] * float32(acc) + bias[o])
        + skip) * out_ratio[o]), 0, 2^out_bits[o] - 1)``, skip float32 like acc."""
        if acc.ndim != 4 or not isinstance(skip, np.ndarray) or skip.dtype != np.float32 \
                or skip.shape != acc.shape:
            raise ValueError("acc must be int64 [B, O, H, W] and skip float32 of its shape")
        if acc.size == 0:
            return np.zeros(acc.shape, np.uint8)
        return self.runtime.to_host(epilogue_launch.residual_requantize(
            self.runtime, np.ascontiguousarray(acc), scale, bias, np.ascontiguousarray(skip),
            out_bits, out_ratio))


def _shape(weights) -> tuple:
    """The code shape of packed weights or of a (codes, bits) pair."""
    return weights.shape if isinstance(weights, CudaPackedWeights) else weights[0].shape
