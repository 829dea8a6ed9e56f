"""``flatten``: [B, C, H, W] codes -> [B, C*H*W]."""

from __future__ import annotations

from dataclasses import dataclass

from .. import checks
from .base import Stage, check_size


@dataclass
class FlattenStage(Stage):
    kind = "flatten"

    def output_shape(self, shape: tuple) -> tuple:
        return (check_size(shape, "flatten input"),)

    def run(self, codes, run):
        return checks.rows(codes)

    def code_bound(self, bound, shape, out_shape):
        return None if bound is None else bound.reshape(-1)

    def spread_back(self, values, in_shape):
        return values.reshape(in_shape)

    def to_onnx(self, graph, codes, out_shape, next_hi):
        """``Flatten`` from axis 1."""
        return graph.op("Flatten", [codes], axis=1)

    @classmethod
    def from_file(cls, entry) -> "FlattenStage":
        return cls()
