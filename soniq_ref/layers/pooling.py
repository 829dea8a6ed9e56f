"""Max pooling over non-overlapping or strided windows of [B, C, H, W].

``y[b, c, i, j] = max_{u, v < k} x[b, c, i*s + u, j*s + v]`` with output size
``floor((H - k) / s) + 1``. Backward routes ``dy`` to the first maximum of each
window (row-major order), so ties are resolved deterministically.

:func:`max_pool_codes` is the same max on uint8 activation codes: because the
activation quantizer is monotone, pooling codes equals quantizing the pooled
values, which is how the deploy model pools.
"""

from __future__ import annotations

import numpy as np

from .. import checks, parallel
from .module import Module


def check_pool_input(x, kernel, stride):
    """Validate a pooling call: ``kernel`` and ``stride`` integers >= 1, ``x`` [B, C, H, W]
    (every backend's pooling checks its input with this, before any kernel runs)."""
    checks.check_nonneg_int("kernel", kernel, 1)
    checks.check_nonneg_int("stride", stride, 1)
    if x.ndim != 4:
        raise ValueError(f"x must be [B, C, H, W], got shape {x.shape}")
    if x.shape[2] < kernel or x.shape[3] < kernel:
        raise ValueError(f"x spatial size {x.shape[2:]} is smaller than the pooling "
                         f"kernel {kernel}")


def _windows(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """[B, C, Ho, Wo, k*k] view-copy of every pooling window."""
    b, c, h, w = x.shape
    ho, wo = (h - kernel) // stride + 1, (w - kernel) // stride + 1
    win = np.lib.stride_tricks.sliding_window_view(x, (kernel, kernel), axis=(2, 3))
    win = win[:, :, ::stride, ::stride][:, :, :ho, :wo]
    return win.reshape(b, c, ho, wo, kernel * kernel)


def pool_output_size(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


def max_pool_codes(codes: np.ndarray, kernel: int, stride: int | None = None) -> np.ndarray:
    """Max pooling of uint8 codes [B, C, H, W] -> uint8 [B, C, Ho, Wo]."""
    stride = kernel if stride is None else stride
    if not isinstance(codes, np.ndarray) or codes.dtype != np.uint8:
        raise TypeError("codes must be a uint8 NumPy array")
    check_pool_input(codes, kernel, stride)
    ho = pool_output_size(codes.shape[2], kernel, stride)
    wo = pool_output_size(codes.shape[3], kernel, stride)
    out = None
    for u in range(kernel):            # a running max over the k*k strided views
        for v in range(kernel):
            view = codes[:, :, u:u + stride * ho:stride, v:v + stride * wo:stride]
            out = view.copy() if out is None else np.maximum(out, view, out=out)
    return out


class MaxPool2d(Module):
    """Max pooling with a square ``kernel`` and ``stride`` (default: the kernel)."""

    def __init__(self, kernel: int, stride: int | None = None):
        super().__init__()
        if not isinstance(kernel, (int, np.integer)) or kernel < 1:
            raise ValueError(f"kernel must be a positive integer, got {kernel!r}")
        stride = kernel if stride is None else stride
        if not isinstance(stride, (int, np.integer)) or stride < 1:
            raise ValueError(f"stride must be a positive integer, got {stride!r}")
        self.kernel, self.stride = int(kernel), int(stride)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_pool_input(x, self.kernel, self.stride)
        self._shape = x.shape
        if self.kernel == self.stride:
            return self._forward_tiled(x)
        win = _windows(x, self.kernel, self.stride)
        self._arg = win.argmax(axis=-1)
        self._shape = x.shape
        return np.take_along_axis(win, self._arg[..., None], axis=-1)[..., 0]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.kernel == self.stride:
            return self._backward_tiled(dy)
        b, c, ho, wo = dy.shape
        k, s = self.kernel, self.stride
        dx = np.zeros(self._shape, dy.dtype)
        rows = np.arange(ho)[:, None] * s + self._arg // k
        cols = np.arange(wo)[None, :] * s + self._arg % k
        bi = np.arange(b)[:, None, None, None]
        ci = np.arange(c)[None, :, None, None]
        # Windows may overlap when stride < kernel: accumulate, never overwrite.
        np.add.at(dx, (bi, ci, rows, cols), dy)
        return dx

    def _forward_tiled(self, x: np.ndarray) -> np.ndarray:
        """Non-overlapping windows: a running max over the k*k window offsets, each a
        strided view; then, for the backward, a 0/1 mask per offset marking where it
        holds its window's first maximum (row-major order; a window whose max is NaN
        routes to offset 0). Every array keeps the memory layout of ``x``; channels
        are split between workers (:mod:`soniq_ref.parallel`)."""
        k = self.kernel
        ho, wo = x.shape[2] // k, x.shape[3] // k
        offsets = [x[:, :, u:u + ho * k:k, v:v + wo * k:k] for u in range(k) for v in range(k)]
        y = np.empty_like(offsets[0])
        self._first_max = [np.empty_like(y) for _ in offsets]

        def pool(c):                     # the channels c
            views = [view[:, c] for view in offsets]
            out = y[:, c]
            np.copyto(out, views[0])
            for view in views[1:]:
                np.maximum(out, view, out=out)
            taken = np.zeros_like(out, dtype=bool)
            first = []
            for view in views:
                hit = view == out
                hit &= ~taken
                taken |= hit
                first.append(hit)
            first[0] |= ~taken
            for mask, hit in zip(self._first_max, first):
                mask[:, c] = hit

        parallel.split(pool, x.shape[1], x.size)
        return y

    def _backward_tiled(self, dy: np.ndarray) -> np.ndarray:
        k = self.kernel
        ho, wo = dy.shape[2:]
        dx = np.empty_like(self._first_max[0], dtype=dy.dtype, shape=self._shape)  # x's layout
        covered = self._shape[2] == ho * k and self._shape[3] == wo * k

        def route(c):                    # the channels c
            if not covered:
                dx[:, c] = 0
            for index, mask in enumerate(self._first_max):
                u, v = divmod(index, k)
                np.multiply(dy[:, c], mask[:, c], out=dx[:, c, u:u + ho * k:k, v:v + wo * k:k])

        parallel.split(route, dy.shape[1], dx.size)
        return dx
