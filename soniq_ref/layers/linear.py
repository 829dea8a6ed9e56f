"""Linear: the float affine map on rows, x [M, C] -> y [M, O].

weight [O, C], bias [O], in the layer's dtype (float32 by default; float64 for the
gradient checks)::

    forward:   y = x @ weight.T + bias
    backward:  dx = dy @ weight,   d weight = dy.T @ x,   d bias = sum_m dy[m]

It is the float stand-in for :class:`.QuantLinear` inside the Transformer layers
(:mod:`.attention`, :mod:`.tokens`, :mod:`.transformer_block`): the same constructor,
parameter names ``weight`` / ``bias`` and initialisation (He normal, ``sqrt(2 / C)``,
from the first stream of ``SeedSequence(seed).spawn(2)``), so a ``QuantLinear`` with the
same seed takes its place (each of those layers has a ``linear`` argument, the factory
that builds its affine maps) and starts from the same weights.
"""

from __future__ import annotations

import numpy as np

from .module import Module


class Linear(Module):
    """A fully connected float layer (see the module docstring)."""

    def __init__(self, in_features: int, out_features: int, *, seed=0, dtype=np.float32):
        super().__init__()
        self.dtype = np.dtype(dtype)
        init_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(2)[0])
        self.params["weight"] = (init_rng.standard_normal((out_features, in_features))
                                 * np.sqrt(2.0 / in_features)).astype(self.dtype)
        self.params["bias"] = np.zeros(out_features, self.dtype)
        self._x = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        w = self.params["weight"]
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ValueError(f"x must be [M, {w.shape[1]}], got shape {x.shape}")
        self._x = x
        return x @ w.T + self.params["bias"]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.grads = {"weight": (dy.T @ self._x).astype(self.dtype),
                      "bias": dy.sum(axis=0).astype(self.dtype)}
        return dy @ self.params["weight"]


def on_tokens(layer: Module, x: np.ndarray) -> np.ndarray:
    """Apply a row layer (``Linear`` or ``QuantLinear``) to every token: x [B, T, C] ->
    [B, T, O], through the [B*T, C] rows. A quantized layer then counts ``T`` values per
    input channel and sample (``act_channel_size``, what the bit budget weighs its
    activation precision by), as a convolution counts its H*W positions."""
    b, t, c = x.shape
    y = layer.forward(x.reshape(b * t, c))
    if hasattr(layer, "act_channel_size"):
        layer.act_channel_size = t
    return y.reshape(b, t, -1)


def on_tokens_backward(layer: Module, dy: np.ndarray) -> np.ndarray:
    """The backward of :func:`on_tokens`: dy [B, T, O] -> dx [B, T, C]."""
    b, t, o = dy.shape
    return layer.backward(dy.reshape(b * t, o)).reshape(b, t, -1)
