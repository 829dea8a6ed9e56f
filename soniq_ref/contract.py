"""The backend contract, checked once: a backend is its kernels behind :class:`CheckedBackend`.

A backend author writes *kernels* (the :class:`Kernels` protocol): the six contract
functions with the contract's signatures, on arguments that are already validated.
:class:`CheckedBackend` is the only implementation of the contract functions themselves:
it validates every argument (the same checks, so the same errors, for every backend),
applies the packed-or-codes rule and the K limit of the kernels' accumulator, and only
then calls the kernels. ``ref``, ``cpu``, ``cuda`` and ``cuda-emu`` are all a
``CheckedBackend`` around their kernels (docs/backend-contract.md).

Kernels may offer more, optional, methods (``max_pool_codes`` and the fused deploy
kernels ``linear_requantize`` / ``conv2d_requantize``); a caller that validated its
arguments itself, as :class:`~soniq_ref.deploy.DeployModel` does, reaches them through
:func:`deploy_kernels`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from . import checks
from .bitpack import check_stored_bits, check_weights, unpack_weights
from .epilogue import check_epilogue_args, check_requantize_args
from .integer_core import check_acts, check_conv_geometry

CONTRACT = ("pack_weights", "pack_activations", "linear_int", "conv2d_int",
            "epilogue", "requantize")

# Largest K an int32 accumulator sums exactly: each term is at most 255 * 255 in magnitude,
# so K terms stay below 2**31 while K <= (2**31 - 1) // (255 * 255) = 33025.
INT32_EXACT_K = (2 ** 31 - 1) // (255 * 255)

# Optional kernel methods that make DeployModel.forward use the kernels directly.
FUSED_KERNELS = ("linear_requantize", "conv2d_requantize")


class Kernels(Protocol):
    """What a backend author implements. Every method has the signature of the contract
    function of the same name; its arguments are already validated by CheckedBackend:
    arrays are C-contiguous NumPy arrays of the documented dtypes and shapes, codes lie
    within their bits, floats are finite, geometry fits, K is at most ``max_k``.

    ``linear_int`` / ``conv2d_int`` receive as ``w_codes`` either an object of
    ``packed_type`` (checked unchanged since packing) or whatever ``weights(codes, bits)``
    made of validated codes; ``w_bits`` are the validated bits (the deploy path passes its
    own; kernels whose weights carry their bits may ignore them).
    """

    name: str
    packed_type: type | None     # what pack_weights returns (None: no packed form of its own)
    max_k: int | None            # largest K the accumulator sums exactly (None: no limit)

    def weights(self, w_codes: np.ndarray, w_bits: np.ndarray): ...
    def pack_weights(self, w_codes: np.ndarray, w_bits: np.ndarray): ...
    def pack_activations(self, a_codes, a_bits, act_bits_hi: int) -> np.ndarray: ...
    def linear_int(self, a_codes, a_bits, w_codes, w_bits, act_bits_hi: int) -> np.ndarray: ...
    def conv2d_int(self, x_codes, a_bits, w_codes, w_bits, act_bits_hi: int, stride: int,
                   padding: int) -> np.ndarray: ...
    def epilogue(self, acc, scale, bias) -> np.ndarray: ...
    def requantize(self, acc, scale, bias, out_bits, out_ratio) -> np.ndarray: ...


class CheckedBackend:
    """The six contract functions (and ``max_pool_codes``), validated once, on ``kernels``.

    ``kernels`` is what DeployModel gets from :func:`deploy_kernels`; the contract
    functions run on ``checked_kernels`` (by default the same object; the cpu backend
    gives its unchecked entries a thread rule for small work).
    """

    def __init__(self, name: str, kernels, checked_kernels=None):
        self.name = name
        self.kernels = kernels
        self._run = kernels if checked_kernels is None else checked_kernels

    def __repr__(self) -> str:
        return f"<soniq backend {self.name}>"

    # Ways of running that must give the same results, each pinned by ``variant(name)``
    # (cpu: ISA code paths; cuda-emu: thread schedules), and the GEMM engines
    # ``with_engine(name)`` pins; a backend with neither has none.
    variants: tuple = ()
    engines: tuple = ()

    def variant(self, name: str):
        """This backend pinned to variant ``name`` (one of :attr:`variants`)."""
        raise ValueError(f"backend {self.name} has no variants, got {name!r}")

    def with_engine(self, engine: str):
        """This backend with every GEMM on engine ``engine`` (one of :attr:`engines`)."""
        raise ValueError(f"backend {self.name} has no engines to choose from, got {engine!r}")

    # ------------------------------------------------------------------------ packing

    def pack_weights(self, w_codes, w_bits):
        """uint8 codes [N, K] or [O, C, kh, kw] and bits uint8 [N] -> the kernels' packed
        weights (a snapshot: later changes to the arrays change nothing)."""
        return self._run.pack_weights(*check_weights(w_codes, w_bits))

    def pack_activations(self, a_codes, a_bits, act_bits_hi) -> np.ndarray:
        """uint64 [M, A, ceil(K/64)]: plane i holds bit i of ``a << (A - a_bits)``."""
        return self._run.pack_activations(*checks.check_act_codes(a_codes, a_bits,
                                                                  act_bits_hi))

    # ------------------------------------------------------------------- integer core

    def linear_int(self, a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
        """int64 [M, N]: ``sum_c (2 w[o,c] - (2^bw[o] - 1)) * (a[m,c] << (A - a_bits[c]))``."""
        weights, w_bits, shape = self._weights(w_codes, w_bits)
        if len(shape) != 2:
            raise ValueError(f"w_codes must be [N, K] for linear_int, got shape {shape}")
        a_codes, a_bits, hi = check_acts(a_codes, a_bits, act_bits_hi, shape[1], ndim=2)
        self._check_k(shape[1])
        return self._run.linear_int(a_codes, a_bits, self._kernel_weights(weights), w_bits, hi)

    def conv2d_int(self, x_codes, a_bits, w_codes, w_bits, act_bits_hi, stride=1, padding=0):
        """int64 [B, O, Ho, Wo]: the linear_int sum over im2col patches, K = (c, row, col)."""
        weights, w_bits, shape = self._weights(w_codes, w_bits)
        if len(shape) != 4:
            raise ValueError(f"w_codes must be [O, C, kh, kw] for conv2d_int, got {shape}")
        x_codes, a_bits, hi = check_acts(x_codes, a_bits, act_bits_hi, shape[1], ndim=4,
                                         name="x_codes")
        stride, padding, _, _ = check_conv_geometry(x_codes.shape, shape, stride, padding)
        self._check_k(shape[1] * shape[2] * shape[3])
        return self._run.conv2d_int(x_codes, a_bits, self._kernel_weights(weights), w_bits, hi,
                                    stride, padding)

    def _weights(self, w_codes, w_bits) -> tuple:
        """The packed-or-codes rule -> (weights, bits, shape): the kernels' own packed object,
        checked unchanged since packing (``w_bits``, when given, must equal its bits), or
        validated (codes, bits) from codes or the reference's PackedWeights."""
        packed_type = self._run.packed_type
        if packed_type is not None and isinstance(w_codes, packed_type):
            w_codes.check()
            if w_bits is not None:
                check_stored_bits(w_bits, w_codes.bits)
            return w_codes, w_codes.bits, tuple(w_codes.shape)
        codes, bits = unpack_weights(w_codes, w_bits)
        return (codes, bits), bits, codes.shape

    def _kernel_weights(self, weights):
        return self._run.weights(*weights) if isinstance(weights, tuple) else weights

    def _check_k(self, k: int) -> None:
        max_k = self._run.max_k
        if max_k is not None and k > max_k:
            raise ValueError(f"w_codes has K = {k} inputs per output; the {self.name} backend "
                             f"accumulates in 32 bits and is exact only up to K = {max_k}; "
                             f"use the ref backend")

    # ----------------------------------------------------------------------- epilogue

    def epilogue(self, acc, scale, bias) -> np.ndarray:
        """float32 like acc: ``scale[o] * float32(acc) + bias[o]`` (channel axis 1)."""
        return self._run.epilogue(*check_epilogue_args(acc, scale, bias))

    def requantize(self, acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
        """uint8 like acc: ``clip(rint(epilogue * out_ratio[o]), 0, 2^out_bits[o] - 1)``."""
        return self._run.requantize(*check_requantize_args(acc, scale, bias, out_bits,
                                                           out_ratio))

    # -------------------------------------------------------------- optional: pooling

    def max_pool_codes(self, codes, kernel, stride=None) -> np.ndarray:
        """:func:`soniq_ref.layers.pooling.max_pool_codes` on the kernels' ``max_pool_codes``
        when they have one: uint8 [B, C, H, W] -> window maxima [B, C, Ho, Wo]."""
        from .layers.pooling import check_pool_input, max_pool_codes   # (layers import backends)
        pool = getattr(self._run, "max_pool_codes", None)
        if pool is None:
            return max_pool_codes(codes, kernel, stride)
        stride = kernel if stride is None else stride
        if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
            raise TypeError("codes must be a uint8 NumPy array")
        check_pool_input(codes, kernel, stride)
        return pool(np.ascontiguousarray(codes), int(kernel), int(stride))


def deploy_kernels(backend):
    """``backend.kernels`` when they offer the fused deploy kernels (:data:`FUSED_KERNELS`),
    else None: the unchecked entries for a caller that validated its arguments itself."""
    kernels = getattr(backend, "kernels", None)
    if kernels is None or not all(hasattr(kernels, name) for name in FUSED_KERNELS):
        return None
    return kernels
