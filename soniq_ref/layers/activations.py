"""ReLU: ``y = max(x, 0)``, ``dx = dy * (x > 0)``.

Before a quantized layer the ReLU changes nothing in noise or exact mode (the
layer's input clip ``clip(x, 0, beta)`` already zeroes negatives); it is what
makes the float baseline a ReLU network, and at deploy time it is the clip at 0
of the fused requantization.
"""

from __future__ import annotations

import numpy as np

from .module import Module


class ReLU(Module):
    """Elementwise rectifier."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._mask = x > 0
        return np.maximum(x, np.zeros((), x.dtype))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self._mask
