"""QuantConv2d: a 2-D convolution (groups = 1) with learned per-channel precision.

x [B, C, H, W], w [O, C, kh, kw], y [B, O, Ho, Wo]. The convolution is a matmul
over the input's patches (K ordered by channel, kernel row, kernel column), which is
also how the integer core defines it: ``w.reshape(O, K) @ patches(x)`` gives
[O, B * Ho * Wo], returned as a [B, O, Ho, Wo] view (channel-major in memory, which
the backward's matmuls read without a copy). Modes and parameters: :mod:`.quant_layer`.
"""

from __future__ import annotations

import numpy as np

from ..integer_core import check_conv_geometry, patches, patches_adjoint
from ..parallel import copy, elementwise, per_channel
from .quant_layer import QuantLayer


class QuantConv2d(QuantLayer):
    """A convolution with per-channel learned precision (see QuantLayer)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride=1,
                 padding=0, **kwargs):
        if kwargs.get("signed_input"):
            raise ValueError("QuantConv2d takes unsigned inputs only (its zero padding is "
                             "code 0); signed_input is for QuantLinear")
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
        cols = patches(x, kh, kw, self.stride, self.padding)       # [K, B * Ho * Wo]
        self._patches = (x, cols)          # reused by backward when it sees the same x
        y = w.reshape(o, -1) @ cols                                 # [O, B * Ho * Wo]
        elementwise(np.add, y, self.params["bias"][:, None], axis=0, out=y)     # y += bias
        return y.reshape(o, x.shape[0], ho, wo).transpose(1, 0, 2, 3)

    def _affine_backward(self, dy, x, w):
        o, _, kh, kw = w.shape
        dy_rows = dy.transpose(1, 0, 2, 3).reshape(o, -1)           # [O, B * Ho * Wo]
        cached_x, cols = getattr(self, "_patches", (None, None))
        if cached_x is not x:
            cols = patches(x, kh, kw, self.stride, self.padding)
        dw = (dy_rows @ cols.T).reshape(w.shape)
        dx = patches_adjoint(w.reshape(o, -1).T @ dy_rows, x.shape, kh, kw, self.stride,
                             self.padding)
        return dx, dw

    def _bias_grad(self, dy):
        return per_channel(lambda dy: dy.sum(axis=(0, 2, 3)), dy)

    def _integer_affine(self, backend, a_codes, w_codes):
        return backend.conv2d_int(a_codes, self.a_bits, w_codes, self.w_bits, self.act_bits_hi,
                                  stride=self.stride, padding=self.padding)

    def _forward_exact(self, x):
        return channel_major(super()._forward_exact(x))


def channel_major(y: np.ndarray) -> np.ndarray:
    """The same [B, C, H, W] values stored channel by channel (the layout of
    :meth:`QuantConv2d._affine`'s output, which the layers after it keep)."""
    out = np.empty((y.shape[1], y.shape[0]) + y.shape[2:], y.dtype)
    return copy(y.transpose(1, 0, 2, 3), out, axis=0).transpose(1, 0, 2, 3)
