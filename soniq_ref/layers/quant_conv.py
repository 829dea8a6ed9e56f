"""QuantConv2d: a 2-D convolution (groups = 1) with learned per-channel precision.

x [B, C, H, W], w [O, C, kh, kw], y [B, O, Ho, Wo]. The convolution is a matmul
over im2col patches (K ordered by channel, kernel row, kernel column), which is
also how the integer core defines it. Modes and parameters: :mod:`.quant_layer`.
"""

from __future__ import annotations

import numpy as np

from ..integer_core import check_conv_geometry, col2im, im2col
from .quant_layer import QuantLayer


class QuantConv2d(QuantLayer):
    """A convolution with per-channel learned precision (see QuantLayer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride=1,
                 padding=0, **kwargs):
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        super().__init__(in_channels, out_channels, (out_channels, in_channels, kh, kw),
                         **kwargs)
        self.stride, self.padding = stride, padding
        check_conv_geometry((1, in_channels, kh + 2 * padding, kw + 2 * padding),
                            (out_channels, in_channels, kh, kw), stride, padding)

    def _geometry(self, x, w):
        if x.ndim != 4 or x.shape[1] != w.shape[1]:
            raise ValueError(f"x must be [B, {w.shape[1]}, H, W], got shape {x.shape}")
        _, _, ho, wo = check_conv_geometry(x.shape, w.shape, self.stride, self.padding)
        return ho, wo

    def _affine(self, x, w):
        ho, wo = self._geometry(x, w)
        o, _, kh, kw = w.shape
        cols = im2col(x, kh, kw, self.stride, self.padding)
        self._patches = (x, cols)          # reused by backward when it sees the same x
        y = cols @ w.reshape(o, -1).T + self.params["bias"]
        return y.reshape(x.shape[0], ho, wo, o).transpose(0, 3, 1, 2)

    def _affine_backward(self, dy, x, w):
        o, _, kh, kw = w.shape
        dy2 = dy.transpose(0, 2, 3, 1).reshape(-1, o)
        cached_x, cols = getattr(self, "_patches", (None, None))
        if cached_x is not x:
            cols = im2col(x, kh, kw, self.stride, self.padding)
        dw = (dy2.T @ cols).reshape(w.shape)
        dx = col2im(dy2 @ w.reshape(o, -1), x.shape, kh, kw, self.stride, self.padding)
        return dx, dw

    def _bias_grad(self, dy):
        return dy.sum(axis=(0, 2, 3))

    def _integer_affine(self, backend, a_codes, w_codes):
        return backend.conv2d_int(a_codes, self.a_bits, w_codes, self.w_bits, self.act_bits_hi,
                                  stride=self.stride, padding=self.padding)
