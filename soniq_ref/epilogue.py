"""The epilogue: integer accumulator -> float32 output, or straight to the next codes.

Per output channel ``o`` (axis 1 of ``acc``), in float32, one multiply then one add::

    y = scale[o] * float32(acc) + bias[o]

At deploy time batch norm and ``alpha / n * s_a`` are folded into ``scale`` and
``bias``. When the next layer is quantized, its input codes come out of the same
step (ReLU is the clip at 0)::

    k = clip(rint(y * ratio[o]), 0, 2**bits[o] - 1)

``float32(acc)`` rounds to nearest even, like C's ``(float)`` of an int64.
"""

from __future__ import annotations

import numpy as np

from . import checks
from .parallel import elementwise
from .quantizers import _per_channel, codes_from_ratio


def check_epilogue_args(acc, scale, bias):
    """Validate ``epilogue``'s arguments (every backend's, in CheckedBackend) -> (acc, scale,
    bias)."""
    acc = checks.as_array("acc", acc, np.int64)
    if acc.ndim not in (2, 4):
        raise ValueError(f"acc must be [M, N] or [B, O, H, W], got shape {acc.shape}")
    scale = checks.check_float32("scale", scale, acc.shape[1])
    bias = checks.check_float32("bias", bias, acc.shape[1])
    return acc, scale, bias


def check_requantize_args(acc, scale, bias, out_bits, out_ratio):
    """Validate ``requantize``'s arguments (for every backend, in CheckedBackend)."""
    acc, scale, bias = check_epilogue_args(acc, scale, bias)
    out_bits = checks.check_bits("out_bits", out_bits, acc.shape[1])
    out_ratio = checks.check_float32("out_ratio", out_ratio, acc.shape[1])
    if np.any(out_ratio <= 0):
        raise ValueError("out_ratio must be > 0 in every channel")
    return acc, scale, bias, out_bits, out_ratio


def affine(acc: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``scale[o] * float32(acc) + bias[o]`` of validated arguments (the reference kernel)."""
    return elementwise(lambda acc, scale, bias, out=None:
                       np.add(scale * acc.astype(np.float32), bias, out=out),
                       acc, _per_channel(scale, acc.ndim), _per_channel(bias, acc.ndim))


def epilogue(acc, scale, bias) -> np.ndarray:
    """acc: int64 [M, N] or [B, O, H, W]; scale, bias: float32 [O] -> float32 like acc."""
    return affine(*check_epilogue_args(acc, scale, bias))


def requantize(acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
    """Fused epilogue + quantization of the next layer's input.

    out_bits: uint8 [O] in 1..8; out_ratio: float32 [O], finite and > 0
    (``2**out_bits / beta_next``). Returns uint8 codes shaped like ``acc``.
    """
    acc, scale, bias, out_bits, out_ratio = check_requantize_args(acc, scale, bias, out_bits,
                                                                  out_ratio)
    return requantize_codes(acc, scale, bias, out_bits, out_ratio)


def requantize_codes(acc, scale, bias, out_bits, out_ratio) -> np.ndarray:
    """:func:`requantize` of validated arguments (the reference kernel)."""
    return codes_from_ratio(affine(acc, scale, bias), out_ratio, out_bits)
