"""Layer normalization over the last axis: x [..., D] -> y [..., D] (x's dtype).

Per token (every index of the leading axes), with learned ``weight`` [D] (ones) and
``bias`` [D] (zeros), named like :class:`.BatchNorm`'s scale and shift::

    mu    = mean(x, axis=-1)
    sigma = sqrt(mean((x - mu)**2, axis=-1) + eps)        (biased variance)
    x^    = (x - mu) / sigma
    y     = weight * x^ + bias

Backward, with ``g = dy * weight`` (the gradient reaching x^) and means over the last
axis::

    dx        = (g - mean(g) - x^ * mean(g * x^)) / sigma
    d weight  = sum of dy * x^ over every leading axis
    d bias    = sum of dy over every leading axis

The statistics are the token's own, so training and evaluation compute the same thing
(no running statistics) and nothing can be folded into a neighbouring layer.

The output is *signed* (x^ has mean 0 per token): an activation quantizer that reads it
needs a signed grid; the unipolar grid ``clip(x, 0, beta)`` of
:mod:`.input_quantizers` would zero half of it.
"""

from __future__ import annotations

import numpy as np

from .module import Module


def layer_norm_parts(x: np.ndarray, eps: float):
    """(x^, 1 / sigma) of ``x`` [..., D] in x's dtype, per token over the last axis, in
    this order: ``mu = mean(x)``, ``c = x - mu``, ``var = mean(c * c)``,
    ``inv_sigma = 1 / sqrt(var + eps)`` (eps in x's dtype), ``x^ = c * inv_sigma``."""
    centered = x - x.mean(axis=-1, keepdims=True)
    var = (centered * centered).mean(axis=-1, keepdims=True)
    inv_sigma = 1 / np.sqrt(var + x.dtype.type(eps))
    return centered * inv_sigma, inv_sigma


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """``x^ * weight + bias`` (:func:`layer_norm_parts`), x [..., D], weight and bias [D]:
    what :meth:`LayerNorm.forward` computes, and the deploy model with it."""
    return layer_norm_parts(x, eps)[0] * weight + bias


class LayerNorm(Module):
    """Normalize each token over its ``dim`` features, then scale and shift."""

    def __init__(self, dim: int, eps: float = 1e-5, *, dtype=np.float32):
        super().__init__()
        if not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        self.dim, self.eps = int(dim), float(eps)
        self.dtype = np.dtype(dtype)
        self.params["weight"] = np.ones(dim, self.dtype)
        self.params["bias"] = np.zeros(dim, self.dtype)
        self._cache = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim < 1 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be [..., {self.dim}], got shape {x.shape}")
        x_hat, inv_sigma = layer_norm_parts(x, self.eps)
        self._cache = (x_hat, inv_sigma)
        return x_hat * self.params["weight"] + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x_hat, inv_sigma = self._cache
        leading = tuple(range(dy.ndim - 1))
        self.grads = {"weight": (dy * x_hat).sum(axis=leading).astype(self.dtype),
                      "bias": dy.sum(axis=leading).astype(self.dtype)}
        g = dy * self.params["weight"]
        return inv_sigma * (g - g.mean(axis=-1, keepdims=True)
                            - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
