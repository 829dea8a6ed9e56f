"""Flatten: [B, C, H, W] -> [B, C * H * W] (C-order: channel, then row, then column)."""

from __future__ import annotations

import numpy as np

from .. import checks
from .module import Module


class Flatten(Module):
    """Reshape every sample to a vector; backward reshapes back."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return checks.rows(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy.reshape(self._shape)
