"""Epilogue and requantize on the device (epilogue.cu)."""

from __future__ import annotations

import numpy as np

BLOCK = 256


def _launch(rt, name, acc: np.ndarray, extra_in, out_dtype):
    total = acc.size
    channels = acc.shape[1]
    hw = int(np.prod(acc.shape[2:])) if acc.ndim > 2 else 1
    out = rt.empty(acc.shape, out_dtype)
    grid = (max(1, (total + BLOCK - 1) // BLOCK),)
    rt.function(name)(grid, (BLOCK,), (rt.to_device(acc), *(rt.to_device(v) for v in extra_in),
                                       np.int64(total), np.int32(channels), np.int64(hw), out))
    return out


def epilogue(rt, acc, scale, bias):
    """float32 like acc: scale[o] * float32(acc) + bias[o], one rounded op each."""
    return _launch(rt, "epilogue_f32", acc, (scale, bias), np.float32)


def requantize(rt, acc, scale, bias, out_bits, out_ratio):
    """uint8 like acc: clip(rint(epilogue * out_ratio[o]), 0, 2^out_bits[o] - 1)."""
    return _launch(rt, "requantize_u8", acc, (scale, bias, out_bits, out_ratio), np.uint8)


def residual_requantize(rt, acc, scale, bias, skip, out_bits, out_ratio):
    """uint8 like acc: clip(rint((epilogue + skip) * out_ratio[o]), 0, 2^out_bits[o] - 1),
    skip float32 like acc (the residual tail)."""
    return _launch(rt, "residual_requantize_u8", acc, (scale, bias, skip, out_bits, out_ratio),
                   np.uint8)
