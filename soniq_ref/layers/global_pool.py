"""Global average pooling, and the classifier that reads it.

``global_avg_pool``: x [B, C, H, W] -> p [B, C], ``p[b, c] = sum_{i, j} x[b, c, i, j] / (H W)``;
its backward spreads ``dp / (H W)`` over every position.

In a quantized network the pooling sits *inside* the classifier,
:class:`PooledQuantLinear`: the classifier quantizes its input per position (the
codes the last block emits) and averages the values those codes stand for::

    y[b, o] = sum_c w^[o, c] * (1 / (H W)) sum_{i, j} x^[b, c, i, j] + bias[o]

In exact mode (and in the deploy model) that is one integer accumulation over all
positions, ``acc[b, o] = sum_{i, j} sum_c q[o, c] * (a[b, c, i, j] << (A - ba[c]))``
(``linear_int`` on the [B*H*W, C] rows, then an exact int64 sum over the H*W
positions), and one epilogue whose scale carries the average:
``scale = alpha / n * s_a / (H W)``. So the pooling adds no rounding at all: the
codes are summed exactly and ``1 / (H W)`` is folded into the float32 scale.
"""

from __future__ import annotations

import numpy as np

from .module import Module
from .quant_linear import QuantLinear


def global_avg_pool(x: np.ndarray) -> np.ndarray:
    """x [B, C, H, W] -> [B, C]: the mean over the H*W positions (in x's dtype)."""
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {x.shape}")
    return x.sum(axis=(2, 3)) / x.dtype.type(x.shape[2] * x.shape[3])


def global_avg_pool_backward(dp: np.ndarray, shape: tuple) -> np.ndarray:
    """dp [B, C] -> dx [B, C, H, W] = dp / (H W) at every position."""
    h, w = shape[2], shape[3]
    scaled = dp / dp.dtype.type(h * w)
    return np.ascontiguousarray(np.broadcast_to(scaled[:, :, None, None], tuple(shape)))


def pooled_accumulator(backend, a_codes, a_bits, w_codes, w_bits, act_bits_hi) -> np.ndarray:
    """int64 [B, O]: ``sum_{i, j} linear_int(a_codes[:, :, i, j], ...)``, exactly.

    a_codes uint8 [B, C, H, W]; w_codes uint8 [O, C] (or packed weights); one
    ``linear_int`` call on the [B*H*W, C] rows (batch, row, column order)."""
    b, c, h, w = a_codes.shape
    rows = np.ascontiguousarray(a_codes.transpose(0, 2, 3, 1)).reshape(b * h * w, c)
    acc = backend.linear_int(rows, a_bits, w_codes, w_bits, act_bits_hi)
    return acc.reshape(b, h * w, -1).sum(axis=1)


class GlobalAvgPool(Module):
    """x [B, C, H, W] -> [B, C], the mean over positions (a float layer, no parameters)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return global_avg_pool(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return global_avg_pool_backward(dy, self._shape)


class PooledQuantLinear(QuantLinear):
    """Global average pooling then a quantized linear classifier, the input quantized
    per position before the pooling (see the module docstring).

    x [B, C, H, W] with ``H * W == positions``, w [O, C], y [B, O]. Its input
    precision is per channel (``act_channel_size`` = H*W elements per sample).
    """

    def __init__(self, in_channels: int, out_features: int, positions: int, **kwargs):
        super().__init__(in_channels, out_features, **kwargs)
        if int(positions) < 1:
            raise ValueError(f"positions must be >= 1, got {positions!r}")
        self.positions = int(positions)

    def _check(self, x):
        if x.ndim != 4 or x.shape[2] * x.shape[3] != self.positions:
            raise ValueError(f"x must be [B, C, H, W] with H * W = {self.positions}, got "
                             f"shape {x.shape}")

    def _affine(self, x, w):
        self._check(x)
        return super()._affine(global_avg_pool(x), w)

    def _affine_backward(self, dy, x, w):
        dp, dw = super()._affine_backward(dy, global_avg_pool(x), w)
        return global_avg_pool_backward(dp, x.shape), dw

    def _integer_affine(self, backend, a_codes, w_codes):
        self._check(a_codes)
        return pooled_accumulator(backend, a_codes, self.a_bits, w_codes, self.w_bits,
                                  self.act_bits_hi)

    def act_step(self) -> np.float32:
        """The step of the *pooled* input: ``s_a / (H W)`` in float32, so that the
        epilogue's ``scale = alpha / n * act_step()`` averages the summed codes."""
        return np.float32(super().act_step() / np.float32(self.positions))
