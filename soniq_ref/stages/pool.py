"""``maxpool``: max pooling on the uint8 codes.

It commutes with the monotone quantizer, so pooling codes equals quantizing pooled
values. Square window ``kernel``, step ``stride``, no padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers.pooling import max_pool_codes, pool_output_size
from .base import Stage


@dataclass
class PoolStage(Stage):
    kernel: int
    stride: int
    kind = "maxpool"

    def output_shape(self, shape: tuple) -> tuple:
        c, h, w = (int(v) for v in shape)
        return (c, pool_output_size(h, self.kernel, self.stride),
                pool_output_size(w, self.kernel, self.stride))

    def run(self, codes, run):
        return run.max_pool_codes(codes, self.kernel, self.stride)

    def code_bound(self, bound, shape, out_shape):
        return None if bound is None else max_pool_codes(bound[None], self.kernel,
                                                         self.stride)[0]

    def spread_back(self, values, in_shape):
        """Pooled values [C, Hp, Wp] -> [C, H, W]: each window's positions take its
        value; positions no window reads take their neighbour's (edge)."""
        if self.kernel != self.stride:
            raise ValueError("per-feature precision through overlapping pooling is not "
                             "supported (use stride == kernel)")
        values = values.repeat(self.kernel, axis=1).repeat(self.kernel, axis=2)
        _, h, w = in_shape
        values = values[:, :h, :w]
        pad = ((0, 0), (0, h - values.shape[1]), (0, w - values.shape[2]))
        return np.pad(values, pad, mode="edge")

    def to_onnx(self, graph, codes, out_shape, next_hi):
        """``MaxPool`` on the shifted codes (a shift is monotone, so it commutes)."""
        return graph.op("MaxPool", [codes], kernel_shape=[self.kernel] * 2,
                        strides=[self.stride] * 2)

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        return {"type", "kernel", "stride"}

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        return {"type": self.kind, "kernel": self.kernel, "stride": self.stride}

    @classmethod
    def from_file(cls, entry) -> "PoolStage":
        stage = cls(entry.int("kernel", 1), entry.int("stride", 1))
        if len(entry.shape) != 3 or min(entry.shape[1:]) < stage.kernel:
            entry.fail(f"kernel {stage.kernel} does not fit input {list(entry.shape)}")
        return stage
