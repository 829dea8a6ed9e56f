"""TransformerBlock: pre-norm self-attention and MLP, each with a residual add.

x [B, T, D] -> y [B, T, D] (x's dtype)::

    h = x + attn(ln1(x))                        attn: MultiHeadSelfAttention, H heads
    y = h + fc2(act(fc1(ln2(h))))               fc1: D -> M D,  fc2: M D -> D

``act`` is ReLU (the default) or GELU (tanh form). ReLU is the default because
``fc2`` then reads non-negative values, which the unipolar activation grid covers
with all its levels; GELU's small negative lobe (down to about -0.17) needs the
signed grid, one level in two spent on it (docs/semantics.md, "Signed
activations").

The affine maps come from two factories: ``signed_linear`` builds the ones that read
signed values (``qkv`` and ``out`` of the attention, ``fc1``, and ``fc2`` after a
GELU), ``linear`` the one that reads a ReLU's output (``fc2``). Both default to the
float :class:`.Linear`; the ViT passes ``QuantLinear`` factories (signed input or
not). The residual adds are float32 sums.

Backward::

    dh = dy + ln2.backward(fc1.backward(act.backward(fc2.backward(dy))))
    dx = dh + ln1.backward(attn.backward(dh))

Parameters (``params``): every child's under ``"ln1.*"``, ``"attn.qkv.*"``,
``"attn.out.*"``, ``"ln2.*"``, ``"fc1.*"``, ``"fc2.*"``; ``grads`` uses the same names.
"""

from __future__ import annotations

import numpy as np

from .activations import ReLU
from .attention import MultiHeadSelfAttention
from .gelu import GELU
from .layernorm import LayerNorm
from .linear import Linear, on_tokens, on_tokens_backward
from .module import Container

ACTIVATIONS = ("relu", "gelu")


class TransformerBlock(Container):
    """ln1 -> attention -> add, ln2 -> fc1 -> act -> fc2 -> add (see the module docstring)."""

    def __init__(self, dim: int, heads: int, *, mlp_ratio: int = 2, activation: str = "relu",
                 seed=0, dtype=np.float32, linear=Linear, signed_linear=Linear):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, "
                             f"got {activation!r}")
        if type(mlp_ratio) is not int or mlp_ratio < 1:
            raise ValueError(f"mlp_ratio must be a positive integer, got {mlp_ratio!r}")
        base = [int(v) for v in np.atleast_1d(seed)]
        hidden = mlp_ratio * dim
        self.activation = activation
        self.ln1 = LayerNorm(dim, dtype=dtype)
        self.attn = MultiHeadSelfAttention(dim, heads, base + [0], dtype=dtype,
                                           linear=signed_linear)
        self.ln2 = LayerNorm(dim, dtype=dtype)
        self.fc1 = signed_linear(dim, hidden, seed=base + [1], dtype=dtype)
        self.act = ReLU() if activation == "relu" else GELU()
        fc2 = linear if activation == "relu" else signed_linear
        self.fc2 = fc2(hidden, dim, seed=base + [2], dtype=dtype)
        self.collect_params()

    def named_layers(self) -> list:
        """(name, layer) of every child with parameters, the attention's two maps as
        ``attn.qkv`` and ``attn.out``."""
        return [("ln1", self.ln1)] + [(f"attn.{n}", l) for n, l in self.attn.named_layers()] \
            + [("ln2", self.ln2), ("fc1", self.fc1), ("fc2", self.fc2)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        h = x + self.attn.forward(self.ln1.forward(x))
        hidden = self.act.forward(on_tokens(self.fc1, self.ln2.forward(h)))
        return h + on_tokens(self.fc2, hidden)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        d_hidden = self.act.backward(on_tokens_backward(self.fc2, dy))
        dh = dy + self.ln2.backward(on_tokens_backward(self.fc1, d_hidden))
        return dh + self.ln1.backward(self.attn.backward(dh))
