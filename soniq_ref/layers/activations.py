"""ReLU: ``y = max(x, 0)``, ``dx = dy * (x > 0)``.

Before a quantized layer the ReLU changes nothing in noise or exact mode (the
layer's input clip ``clip(x, 0, beta)`` already zeroes negatives); it is what
makes the float baseline a ReLU network, and at deploy time it is the clip at 0
of the fused requantization. Channels are split between workers
(:func:`soniq_ref.parallel.elementwise`).
"""

from __future__ import annotations

import numpy as np

from ..parallel import elementwise
from .module import Module


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)`` in x's dtype: what :meth:`ReLU.forward` computes."""
    return elementwise(lambda x, out=None: np.maximum(x, np.zeros((), x.dtype), out=out), x)


class ReLU(Module):
    """Elementwise rectifier."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._x = x
        return relu(x)

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return elementwise(lambda dy, x, out=None: np.multiply(dy, x > 0, out=out), dy, self._x)
