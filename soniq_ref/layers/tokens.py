"""From an image to tokens and back to one vector: the ends of a Vision Transformer.

Shapes are [B, T, D] (batch, tokens, features); every layer works in its input's
dtype, its parameters in the layer's ``dtype`` (float32 by default, float64 for the
gradient checks).

``PatchEmbedding``  x [B, C, H, W] -> [B, T, D], ``T = (H / p) (W / p)``: cut the image
    into non-overlapping p x p patches, row by row over the patch grid; flatten each in
    (channel, row, column) order to a vector of ``C p p``; apply the child
    ``proj`` (weight [D, C p p], bias [D]), built by the ``linear`` factory
    (:class:`.Linear` by default; the ViT's is a ``QuantLinear`` that reads the pixels). That is a p x p convolution with stride
    p, its weight reshaped to [D, C, p, p]. Backward: ``proj``'s backward, then the
    patches put back in place (they do not overlap, so nothing is summed).
``PositionEmbedding``  x [B, T, D] -> ``x + table``, learned ``table`` [T, D] (initial
    values ``0.02 * N(0, 1)``). Backward: ``dx = dy``, ``d table = sum_b dy[b]``.
``ClassToken``  x [B, T, D] -> [B, T + 1, D]: a learned ``token`` [1, D] (zeros at
    first) prepended to every sample. Backward: ``dx = dy[:, 1:]``,
    ``d token = sum_b dy[b, :1]``.
``TokenMean``  x [B, T, D] -> [B, D], the mean over tokens. Backward: ``dy / T`` copied
    to every token.
``FirstToken``  x [B, T, D] -> [B, D], token 0 (the class token). Backward: ``dy`` into
    token 0, zeros elsewhere.
"""

from __future__ import annotations

import numpy as np

from .linear import Linear, on_tokens, on_tokens_backward
from .module import Container, Module


def _check_tokens(x: np.ndarray, dim: int, tokens: int | None = None) -> None:
    if x.ndim != 3 or x.shape[2] != dim or tokens not in (None, x.shape[1]):
        want = f"[B, {'T' if tokens is None else tokens}, {dim}]"
        raise ValueError(f"x must be {want}, got shape {x.shape}")


def patch_rows(x: np.ndarray, patch: int) -> np.ndarray:
    """x [B, C, H, W] (any dtype) -> [B, T, C p p]: the p x p patches row by row over the
    patch grid, each flattened in (channel, row, column) order (a copy, x's dtype)."""
    b, c, h, w = x.shape
    p = patch
    rows = x.reshape(b, c, h // p, p, w // p, p).transpose(0, 2, 4, 1, 3, 5)
    return rows.reshape(b, (h // p) * (w // p), c * p * p)


def prepend_token(x: np.ndarray, token: np.ndarray) -> np.ndarray:
    """x [B, T, D], token [1, D] -> [B, T + 1, D] in x's dtype, the token first."""
    token = np.broadcast_to(token.astype(x.dtype), (x.shape[0], 1, x.shape[2]))
    return np.concatenate([token, x], axis=1)


def add_positions(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``x + table``: x [B, T, D], table [T, D], one add per element."""
    return x + table


def token_mean(x: np.ndarray) -> np.ndarray:
    """x [B, T, D] -> [B, D]: ``x.mean(axis=1)`` (NumPy's sum over the tokens, then the
    division by T, in x's dtype)."""
    return x.mean(axis=1)


def first_token(x: np.ndarray) -> np.ndarray:
    """x [B, T, D] -> [B, D]: token 0, contiguous."""
    return np.ascontiguousarray(x[:, 0])


POOLS = {"mean": token_mean, "cls": first_token}   # the ViT's pooling, by its name


class PatchEmbedding(Container):
    """Non-overlapping p x p patches, each mapped linearly to D features."""

    def __init__(self, in_channels: int, patch: int, dim: int, seed=0, *, dtype=np.float32,
                 linear=Linear):
        super().__init__()
        if patch < 1:
            raise ValueError(f"patch must be >= 1, got {patch!r}")
        self.in_channels, self.patch, self.dim = int(in_channels), int(patch), int(dim)
        self.proj = linear(in_channels * patch * patch, dim, seed=seed, dtype=dtype)
        self.collect_params()
        self._shape = None

    def named_layers(self) -> list:
        """(name, layer) of the one child, the projection."""
        return [("proj", self.proj)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._check(x)
        self._shape = x.shape
        return on_tokens(self.proj, patch_rows(x, self.patch))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        b, c, h, w = self._shape
        p = self.patch
        d_rows = on_tokens_backward(self.proj, dy)
        d_rows = d_rows.reshape(b, h // p, w // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
        return d_rows.reshape(b, c, h, w)

    def _check(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be [B, {self.in_channels}, H, W], got shape {x.shape}")
        h, w = x.shape[2:]
        if h % self.patch or w % self.patch:
            raise ValueError(f"H and W must be multiples of patch={self.patch}, "
                             f"got H={h}, W={w}")
        return x.shape


class PositionEmbedding(Module):
    """Add a learned [T, D] table to every sample."""

    def __init__(self, tokens: int, dim: int, seed=0, *, dtype=np.float32):
        super().__init__()
        self.tokens, self.dim = int(tokens), int(dim)
        rng = np.random.default_rng(seed)
        self.params["table"] = (0.02 * rng.standard_normal((tokens, dim))).astype(dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_tokens(x, self.dim, self.tokens)
        return add_positions(x, self.params["table"])

    def backward(self, dy: np.ndarray) -> np.ndarray:
        table = self.params["table"]
        self.grads = {"table": dy.sum(axis=0).astype(table.dtype)}
        return dy


class ClassToken(Module):
    """Prepend a learned token: [B, T, D] -> [B, T + 1, D]."""

    def __init__(self, dim: int, *, dtype=np.float32):
        super().__init__()
        self.dim = int(dim)
        self.params["token"] = np.zeros((1, dim), dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        _check_tokens(x, self.dim)
        return prepend_token(x, self.params["token"])

    def backward(self, dy: np.ndarray) -> np.ndarray:
        token = self.params["token"]
        self.grads = {"token": dy[:, :1].sum(axis=0).astype(token.dtype)}
        return np.ascontiguousarray(dy[:, 1:])


class TokenMean(Module):
    """Mean over tokens: [B, T, D] -> [B, D]."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3:
            raise ValueError(f"x must be [B, T, D], got shape {x.shape}")
        self._shape = x.shape
        return token_mean(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        t = self._shape[1]
        return np.ascontiguousarray(np.broadcast_to((dy / t)[:, None, :], self._shape))


class FirstToken(Module):
    """Token 0 of every sample: [B, T, D] -> [B, D]."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 3:
            raise ValueError(f"x must be [B, T, D], got shape {x.shape}")
        self._shape = x.shape
        return first_token(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dx = np.zeros(self._shape, dy.dtype)
        dx[:, 0] = dy
        return dx
