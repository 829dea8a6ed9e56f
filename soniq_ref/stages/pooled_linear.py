"""``avgpool_linear``: global average pooling and the linear classifier, on codes.

Input codes [B, C, H, W] (each channel at its own ``a_bits[c]``), weights [O, C]::

    acc[b, o] = sum_{i, j} sum_c q[o, c] * (a[b, c, i, j] << (A - a_bits[c]))    int64, exact
    y[b, o]   = scale[o] * float32(acc[b, o]) + bias[o]                          the epilogue

The accumulator is one ``linear_int`` on the [B*H*W, C] rows (batch, row, column
order) summed exactly over the H*W positions
(:func:`soniq_ref.layers.global_pool.pooled_accumulator`); the average's ``1 / (H W)``
is folded into ``scale`` (``alpha / n * s_a / (H W)``, float32), so pooling adds
no rounding and every backend's ``linear_int`` and ``epilogue`` give the same bits.
It ends the model (float32 logits); stored like ``linear`` (weights [O, C]) plus
``positions`` = H * W, the positions its ``scale`` averages over: the stage refuses an
input of any other size (the average would be wrong).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import checks
from ..layers.global_pool import pooled_accumulator
from .quant import QuantStage, onnx_check_k, out_code_bound


@dataclass
class PooledLinearStage(QuantStage):
    """A :class:`QuantStage` of kind ``avgpool_linear`` (see the module docstring);
    ``positions``: H * W of the [C, H, W] codes it reads."""

    positions: int = 0

    KINDS = ("avgpool_linear",)

    @property
    def gives_logits(self) -> bool:
        return True

    def output_shape(self, shape: tuple) -> tuple:
        return (self.out_channels,)

    def _accumulate(self, impl, packed, codes):
        return pooled_accumulator(impl, codes, self.a_bits, packed, self.w_bits,
                                  self.act_bits_hi)

    def _fused(self, kernels, packed, codes):
        raise ValueError("an avgpool_linear stage ends the model (it has no fused "
                         "requantization)")

    def code_bound(self, bound, shape, out_shape):
        """As :meth:`QuantStage.code_bound` for input [C, H, W] and weights [O, C]; only
        as the stage that ends the model."""
        hi = checks.check_bits_value("act_bits_hi", self.act_bits_hi)
        if len(shape) != 3 or self.w_codes.ndim != 2 or self.w_codes.shape[1] != shape[0] \
                or shape[1] * shape[2] != self.positions:
            raise ValueError("weights or positions do not fit the stage's input")
        a_bits = checks.check_bits("a_bits", self.a_bits, shape[0], hi=hi)
        if bound is not None:
            checks.check_codes("codes", bound[None], a_bits, axis=1)
        checks.check_float32("scale", self.scale, self.out_channels)
        checks.check_float32("bias", self.bias, self.out_channels)
        if not self.final:
            raise ValueError("an avgpool_linear stage must end the model")
        return out_code_bound(self, out_shape)

    def to_onnx(self, graph, codes, out_shape, next_hi):
        """The reference's accumulator on integer operators: the codes as [B, H*W, C]
        rows, ``2 * MatMulInteger(rows, k_w^T) - n * MatMulInteger(rows, ones)`` per
        position (int32), ``ReduceSum`` over the positions (int32, exact), then the
        epilogue -- float32 logits [B, O]."""
        channels = self.w_codes.shape[1]
        onnx_check_k(channels * self.positions)     # the int32 sum over every position
        flat = graph.op("Reshape", [codes, graph.const(
            "rows_shape", np.array([0, channels, -1], np.int64))])
        rows = graph.op("Transpose", [flat], perm=[0, 2, 1])
        acc = graph.op("ReduceSum", [self._onnx_accumulate(graph, rows),
                                     graph.const("positions_axis", np.array([1], np.int64))],
                       keepdims=0)
        return self._onnx_epilogue(graph, acc, 2)

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        return super().file_keys(kind, last) | {"positions"}

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        return {**super().to_file(index, last, tensors), "positions": int(self.positions)}

    @classmethod
    def from_file(cls, entry) -> "PooledLinearStage":
        stage = super().from_file(entry)          # _check_fit checked ``positions``
        stage.positions = entry.fields["positions"]
        return stage

    @classmethod
    def _check_fit(cls, entry, kind, wshape, stride, padding) -> None:
        shape = entry.shape
        if len(shape) != 3 or shape[0] != wshape[1]:
            entry.fail(f"weights expect input [{wshape[1]}, H, W], the previous stage gives "
                       f"{list(shape)}")
        positions = entry.int("positions", 1)
        if shape[1] * shape[2] != positions:
            entry.fail(f"its scale averages {positions} positions, the previous stage gives "
                       f"{shape[1]} x {shape[2]}")
        if not entry.last:
            entry.fail("an avgpool_linear stage must be the last stage (the classifier)")
