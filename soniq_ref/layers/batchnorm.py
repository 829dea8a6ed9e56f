"""Batch normalization over the channel axis (axis 1), 1-d and 2-d.

For x [N, C] (1-d) or [B, C, H, W] (2-d), per channel c, with the statistics
taken over every axis but 1::

    train:  mu_c, var_c = mean, biased variance of x[:, c] over the batch
            running_mean <- (1 - momentum) * running_mean + momentum * mu
            running_var  <- (1 - momentum) * running_var  + momentum * var_unbiased
    eval:   mu_c, var_c = running_mean[c], running_var[c]
    y = weight[c] * (x - mu_c) / sqrt(var_c + eps) + bias[c]

In eval mode the layer is the per-channel affine map ``y = a_c * x + b_c`` with
``a = weight / sqrt(running_var + eps)``, ``b = bias - a * running_mean``
(:meth:`BatchNorm.folded`), which is what the deploy model folds into the
previous layer's epilogue.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from ..parallel import elementwise, per_channel
from .module import Module


class BatchNorm(Module):
    """Batch norm over axis 1 of an input with ``ndim`` dimensions."""

    ndim = 0

    def __init__(self, channels: int, *, eps: float = 1e-5, momentum: float = 0.1,
                 dtype=np.float32):
        super().__init__()
        if not isinstance(channels, (int, np.integer)) or channels < 1:
            raise ValueError(f"channels must be a positive integer, got {channels!r}")
        self.channels, self.eps, self.momentum = int(channels), float(eps), float(momentum)
        self.dtype = np.dtype(dtype)
        self.params["weight"] = np.ones(channels, self.dtype)
        self.params["bias"] = np.zeros(channels, self.dtype)
        self.running_mean = np.zeros(channels, self.dtype)
        self.running_var = np.ones(channels, self.dtype)
        self._cache = None

    def _axes(self, x):
        if x.ndim != self.ndim or x.shape[1] != self.channels:
            raise ValueError(f"x must have {self.ndim} dimensions and {self.channels} channels "
                             f"on axis 1, got shape {x.shape}")
        return (0,) + tuple(range(2, x.ndim))

    @staticmethod
    def _col(v, ndim):
        return v.reshape([1, -1] + [1] * (ndim - 2))

    def forward(self, x: np.ndarray) -> np.ndarray:
        axes = self._axes(x)
        n = x.size // self.channels
        col = partial(self._col, ndim=x.ndim)
        if self.training:
            mu = per_channel(lambda x: x.sum(axis=axes) / n, x)
            centered = elementwise(np.subtract, x, col(mu.astype(x.dtype)))
            var = per_channel(lambda c: _channel_dot(c, c) / n, centered)
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mu
            self.running_var[...] = (1 - m) * self.running_var + m * var * (n / max(n - 1, 1))
        else:
            mu, var = self.running_mean, self.running_var
            centered = elementwise(np.subtract, x, col(mu.astype(x.dtype)))
        inv_std = (1.0 / np.sqrt(var + self.eps)).astype(x.dtype)
        x_hat = elementwise(np.multiply, centered, col(inv_std), out=centered)   # in place
        self._cache = (x_hat, inv_std, axes, self.training)
        return elementwise(_scale_shift, x_hat, col(self.params["weight"]),
                           col(self.params["bias"]))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x_hat, inv_std, axes, training = self._cache
        col = partial(self._col, ndim=dy.ndim)
        sum_dy = per_channel(lambda dy: dy.sum(axis=axes), dy)
        sum_dy_xhat = per_channel(_channel_dot, dy, x_hat)
        self.grads = {"weight": sum_dy_xhat.astype(self.dtype), "bias": sum_dy.astype(self.dtype)}
        g = col(self.params["weight"] * inv_std)
        if not training:
            return elementwise(np.multiply, dy, g)
        # d/dx of the batch statistics: subtract the mean of dy and of dy * x_hat.
        n = dy.size // self.channels
        return elementwise(_input_grad, x_hat, dy, col((sum_dy_xhat / n).astype(dy.dtype)),
                           col((sum_dy / n).astype(dy.dtype)), g, out=np.empty_like(x_hat))

    def folded(self) -> tuple[np.ndarray, np.ndarray]:
        """Eval-mode affine map as float64 ``(a, b)``: ``y = a * x + b`` per channel."""
        a = self.params["weight"].astype(np.float64) / np.sqrt(
            self.running_var.astype(np.float64) + self.eps)
        return a, self.params["bias"].astype(np.float64) - a * self.running_mean


def _scale_shift(x_hat, weight, bias, out=None):
    """``x_hat * weight + bias`` (in ``out`` when given)."""
    y = np.multiply(x_hat, weight, out=out)
    y += bias
    return y


def _input_grad(x_hat, dy, mean_dy_xhat, mean_dy, g, out):
    """``out = (dy - x_hat * mean_dy_xhat - mean_dy) * g``, in place in ``out``."""
    np.multiply(x_hat, mean_dy_xhat, out=out)
    np.subtract(dy, out, out=out)
    out -= mean_dy
    out *= g
    return out


def _channel_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per channel (axis 1): sum of a * b over every other axis, without a temporary."""
    a3 = a.reshape(a.shape[0], a.shape[1], -1)
    return np.einsum("bcs,bcs->c", a3, b.reshape(a3.shape))


class BatchNorm1d(BatchNorm):
    """x [N, C]."""

    ndim = 2


class BatchNorm2d(BatchNorm):
    """x [B, C, H, W]."""

    ndim = 4
