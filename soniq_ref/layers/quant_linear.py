"""QuantLinear: ``y = x~ @ w~.T + bias`` with x [M, C], w [O, C], y [M, O].

The quantizers, modes and parameters are described in :mod:`.quant_layer`. With
``signed_input=True`` the integer accumulator is taken over the signed levels:
``linear_int`` on the (unsigned) codes less :func:`soniq_ref.integer_core.signed_input_offset`.
"""

from __future__ import annotations

from ..integer_core import signed_input_offset
from .quant_layer import QuantLayer


class QuantLinear(QuantLayer):
    """A fully connected layer with per-channel learned precision (see QuantLayer)."""

    def __init__(self, in_features: int, out_features: int, **kwargs):
        super().__init__(in_features, out_features, (out_features, in_features), **kwargs)

    def _affine(self, x, w):
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ValueError(f"x must be [M, {w.shape[1]}], got shape {x.shape}")
        return x @ w.T + self.params["bias"]

    def _affine_backward(self, dy, x, w):
        return dy @ w, dy.T @ x

    def _bias_grad(self, dy):
        return dy.sum(axis=0)

    def _integer_affine(self, backend, a_codes, w_codes):
        acc = backend.linear_int(a_codes, self.a_bits, w_codes, self.w_bits, self.act_bits_hi)
        if self.signed_input:
            acc = acc - signed_input_offset(w_codes, self.w_bits, self.act_bits_hi)
        return acc
