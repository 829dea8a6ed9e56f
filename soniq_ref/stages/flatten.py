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

    @classmethod
    def from_file(cls, entry) -> "FlattenStage":
        return cls()
