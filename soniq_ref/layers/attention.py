"""Multi-head self-attention: x [B, T, D] -> y [B, T, D] (x's dtype).

``H`` heads of width ``d = D / H``. Two affine maps on the [B*T, D] rows, each built by
the ``linear`` factory (:class:`.Linear` by default; the ViT passes a signed-input
``QuantLinear``: both read signed values): ``qkv`` (weight [3D, D], bias [3D]) and
``out`` (weight [D, D], bias [D]). Q K^T and P V are float products. Forward, per
batch and head::

    [q | k | v] = x @ W_qkv.T + b_qkv                       each [B, H, T, d]
    S = q @ k.T / sqrt(d)                                   [B, H, T, T]
    P = softmax(S) over the last axis, as exp(S - max S) / sum   (stable)
    O = P @ v, heads concatenated back to [B, T, D]
    y = O @ W_out.T + b_out

Backward, from dO (the ``out`` child's dx)::

    dv = P.T @ dO,   dP = dO @ v.T
    dS = P * (dP - sum(dP * P, axis=-1))                    softmax backward
    dq = dS @ k / sqrt(d),   dk = dS.T @ q / sqrt(d)
    dx = the ``qkv`` child's backward of [dq | dk | dv]

Within the 3D features of ``qkv``, the layout is (q, k, v) then head then feature:
feature ``j * D + h * d + i`` is element ``i`` of head ``h`` of q (j = 0), k or v.

Parameters (``params``): ``"qkv.weight"``, ``"qkv.bias"``, ``"out.weight"``,
``"out.bias"`` (the children's arrays); ``grads`` uses the same names.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .linear import Linear, on_tokens, on_tokens_backward
from .module import Container


def softmax(s: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; the row maximum is subtracted first, so large
    entries do not overflow ``exp``."""
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(p: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """dS = P * (dP - sum(dP * P, axis=-1)), for P = softmax(S)."""
    return p * (dp - (dp * p).sum(axis=-1, keepdims=True))


class AttentionCore(NamedTuple):
    """What :func:`attention_core` computes (the forward's values, kept for the backward)."""

    q: np.ndarray                 # [B, H, T, d] (views into the qkv output)
    k: np.ndarray                 # [B, H, T, d]
    v: np.ndarray                 # [B, H, T, d]
    p: np.ndarray                 # softmax(S) [B, H, T, T]
    scale: float                  # 1 / sqrt(d)
    o: np.ndarray                 # the heads concatenated, [B, T, D]


def split_heads(qkv: np.ndarray, heads: int):
    """[B, T, 3D] -> q, k, v, each [B, H, T, d] (``d = D / H``; views, no copy)."""
    b, t, three_d = qkv.shape
    dim = three_d // 3
    return qkv.reshape(b, t, 3, heads, dim // heads).transpose(2, 0, 3, 1, 4)


def attention_core(qkv: np.ndarray, heads: int) -> AttentionCore:
    """From the ``qkv`` map's output [B, T, 3D] to the heads' output [B, T, D], in the
    dtype of ``qkv`` and in this order: ``S = (q @ k^T) * scale`` (``scale = 1 /
    sqrt(d)``, a Python float), ``P = softmax(S)``, ``O = P @ v``, heads concatenated
    (feature ``h * d + i``). What :meth:`MultiHeadSelfAttention.forward` computes between
    its two maps, and the deploy model with it."""
    if qkv.ndim != 3 or qkv.shape[2] % (3 * heads):
        raise ValueError(f"qkv must be [B, T, 3 D] with D a multiple of heads={heads}, got "
                         f"shape {qkv.shape}")
    b, t, three_d = qkv.shape
    dim = three_d // 3
    q, k, v = split_heads(qkv, heads)
    scale = 1 / math.sqrt(dim // heads)
    p = softmax(q @ k.swapaxes(-1, -2) * scale)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, dim)
    return AttentionCore(q, k, v, p, scale, o)


class MultiHeadSelfAttention(Container):
    """Scaled dot-product self-attention with ``heads`` heads (see the module docstring)."""

    def __init__(self, dim: int, heads: int, seed=0, *, dtype=np.float32, linear=Linear):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"dim must be a multiple of heads, got dim={dim}, heads={heads}")
        self.dim, self.heads = int(dim), int(heads)
        seeds = [[int(v) for v in np.atleast_1d(seed)] + [j] for j in range(2)]
        self.qkv = linear(dim, 3 * dim, seed=seeds[0], dtype=dtype)
        self.out = linear(dim, dim, seed=seeds[1], dtype=dtype)
        self.collect_params()
        self._cache = None

    def named_layers(self) -> list:
        """(name, layer) of the two projections."""
        return [("qkv", self.qkv), ("out", self.out)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3 or x.shape[2] != self.dim:
            raise ValueError(f"x must be [B, T, {self.dim}], got shape {x.shape}")
        core = attention_core(on_tokens(self.qkv, x), self.heads)
        self._cache = core[:5]
        return on_tokens(self.out, core.o)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        q, k, v, p, scale = self._cache
        b, h, t, d = q.shape
        d_o = on_tokens_backward(self.out, dy)
        d_o = d_o.reshape(b, t, h, d).transpose(0, 2, 1, 3)
        dv = p.swapaxes(-1, -2) @ d_o
        ds = softmax_backward(p, d_o @ v.swapaxes(-1, -2)) * scale
        dq, dk = ds @ k, ds.swapaxes(-1, -2) @ q
        d_qkv = np.stack([dq, dk, dv]).transpose(1, 3, 0, 2, 4).reshape(b, t, 3 * self.dim)
        return on_tokens_backward(self.qkv, d_qkv)
