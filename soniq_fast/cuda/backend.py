"""The cuda backend object: the six contract functions on a runtime.

``CudaBackend(runtime)`` runs on the CPU emulation (``EmulatedRuntime``) or a GPU
(``GpuRuntime``); the validation and launch code are the same for both. Results
are NumPy arrays; inputs may be NumPy or CuPy arrays.
"""

from __future__ import annotations

import numpy as np

from soniq_ref import checks
from soniq_ref.bitpack import check_weights
from soniq_ref.epilogue import check_epilogue_args, check_requantize_args

from .launch import epilogue as epilogue_launch
from .launch.engines import ENGINES
from .launch.gemm import integer_gemm
from .launch.geometry import conv_geometry, linear_geometry
from .launch.pack import pack_planes, pack_weight_codes
from .packed import CudaPackedWeights
from .runtime.emulated import EmulatedRuntime
from .validate import check_acts, check_conv_geometry, check_k, weight_shape, weights_or_codes


class CudaBackend:
    """The contract (docs/backend-contract.md) on ``runtime``; ``engine`` pins the GEMM engine."""

    def __init__(self, runtime, name: str, engine: str = "auto"):
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.runtime, self.name, self.engine = runtime, name, engine

    def __repr__(self):
        return f"<soniq cuda backend {self.name} engine={self.engine}>"

    def variant(self, name: str) -> "CudaBackend":
        """The emulated backend pinned to a thread schedule: forward, reverse or random."""
        if not isinstance(self.runtime, EmulatedRuntime):
            raise ValueError(f"backend {self.name} runs on a GPU and has no schedule variants")
        runtime = EmulatedRuntime(schedule=name, seed=self.runtime.seed,
                                  compute_capability=self.runtime.compute_capability)
        return CudaBackend(runtime, f"cuda-emu:{name}", self.engine)

    def with_engine(self, engine: str) -> "CudaBackend":
        """The same backend with every weight row on one engine (auto, bitserial, mma, int8)."""
        return CudaBackend(self.runtime, self.name, engine)

    # ------------------------------------------------------------------ packing

    def pack_weights(self, w_codes, w_bits) -> CudaPackedWeights:
        """uint8 codes [N, K] or [O, C, kh, kw] and bits [N] -> CudaPackedWeights."""
        codes, bits = check_weights(w_codes, w_bits)
        return pack_weight_codes(self.runtime, codes, bits)

    def pack_activations(self, a_codes, a_bits, act_bits_hi) -> np.ndarray:
        """uint64 [M, A, ceil(K/64)]: plane i holds bit i of a << (A - a_bits), LSB first."""
        a_codes, a_bits, act_bits_hi = checks.check_act_codes(a_codes, a_bits, act_bits_hi)
        m, k = a_codes.shape
        rt = self.runtime
        if m == 0:
            return np.zeros((0, act_bits_hi, (k + 63) // 64), np.uint64)
        shift = rt.to_device((act_bits_hi - a_bits).astype(np.uint8))
        planes = pack_planes(rt, rt.to_device(a_codes), shift, linear_geometry(k), m, k,
                             act_bits_hi)
        return rt.to_host(planes)

    # ------------------------------------------------------------- integer core

    def _packed(self, weights) -> CudaPackedWeights:
        if isinstance(weights, CudaPackedWeights):
            return weights
        return pack_weight_codes(self.runtime, *weights)

    def linear_int(self, a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
        """int64 [M, N]: sum_c (2 w[o,c] - (2^bw[o] - 1)) * (a[m,c] << (A - a_bits[c]))."""
        weights = weights_or_codes(w_codes, w_bits)
        shape = weight_shape(weights)
        if len(shape) != 2:
            raise ValueError(f"w_codes must be [N, K] for linear_int, got shape {shape}")
        a_codes, a_bits, act_bits_hi = check_acts(a_codes, a_bits, act_bits_hi, shape[1], ndim=2)
        check_k(shape[1])
        m, n = a_codes.shape[0], shape[0]
        if m == 0 or n == 0:
            return np.zeros((m, n), np.int64)
        rt = self.runtime
        shift = rt.to_device((act_bits_hi - a_bits).astype(np.uint8))
        acc = integer_gemm(rt, self.engine, rt.to_device(a_codes), shift,
                           linear_geometry(shape[1]), m, act_bits_hi, self._packed(weights), 1)
        return rt.to_host(acc).reshape(m, n)

    def conv2d_int(self, x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride=1, padding=0):
        """int64 [B, O, Ho, Wo], the conv2d accumulator as an implicit GEMM (groups = 1)."""
        weights = weights_or_codes(w_codes, w_bits)
        shape = weight_shape(weights)
        if len(shape) != 4:
            raise ValueError(f"w_codes must be [O, C, kh, kw] for conv2d_int, got {shape}")
        x_codes, a_bits, act_bits_hi = check_acts(x_codes, a_bits, act_bits_hi, shape[1],
                                                   ndim=4, name="x_codes")
        stride, padding, ho, wo = check_conv_geometry(x_codes.shape, shape, stride, padding)
        o, c, kh, kw = shape
        check_k(c * kh * kw)
        b, _, h, w = x_codes.shape
        if b == 0 or o == 0:
            return np.zeros((b, o, ho, wo), np.int64)
        rt = self.runtime
        shift = rt.to_device((act_bits_hi - a_bits).astype(np.uint8))
        geometry = conv_geometry(c, h, w, kh, kw, stride, padding, ho, wo)
        acc = integer_gemm(rt, self.engine, rt.to_device(x_codes), shift, geometry,
                           b * ho * wo, act_bits_hi, self._packed(weights), ho * wo)
        return rt.to_host(acc).reshape(b, o, ho, wo)

    # ----------------------------------------------------------------- epilogue

    def epilogue(self, acc, scale, bias) -> np.ndarray:
        """float32 like acc: scale[o] * float32(acc) + bias[o], one multiply then one add."""
        acc, scale, bias = check_epilogue_args(acc, scale, bias)
        if acc.size == 0:
            return np.zeros(acc.shape, np.float32)
        return self.runtime.to_host(epilogue_launch.epilogue(self.runtime, acc, scale, bias))

    def requantize(self, acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc: clip(rint(epilogue * out_ratio[o]), 0, 2^out_bits[o] - 1)."""
        acc, scale, bias, out_bits, out_ratio = check_requantize_args(acc, scale, bias,
                                                                      out_bits, out_ratio)
        if acc.size == 0:
            return np.zeros(acc.shape, np.uint8)
        return self.runtime.to_host(
            epilogue_launch.requantize(self.runtime, acc, scale, bias, out_bits, out_ratio))
