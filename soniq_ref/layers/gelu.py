"""GELU, tanh approximation: elementwise, any shape, x's dtype.

::

    u  = c * (x + k x**3),   c = sqrt(2 / pi),  k = 0.044715
    y  = 0.5 x (1 + tanh u)
    dx = dy * (0.5 (1 + t) + 0.5 x (1 - t**2) c (1 + 3 k x**2)),   t = tanh u

The exact GELU, ``x * Phi(x)``, needs ``erf``, which NumPy does not have as an array
function (only ``math.erf``, one scalar at a time; SciPy is not a dependency). The tanh
form is a closed form of array operations, so it runs in float32 (or float64 for the
gradient checks) without leaving NumPy; it differs from the exact GELU by less than
5e-4 everywhere.
"""

from __future__ import annotations

import math

import numpy as np

from .module import Module

C = math.sqrt(2.0 / math.pi)
K = 0.044715


def gelu_parts(x: np.ndarray):
    """(y, t) of the forward: ``t = tanh(C * (x + K * x**3))``, ``y = 0.5 * x * (1 + t)``,
    in x's dtype, in this order."""
    t = np.tanh(C * (x + K * x ** 3))
    return 0.5 * x * (1 + t), t


def gelu(x: np.ndarray) -> np.ndarray:
    """``y`` of :func:`gelu_parts`: what :meth:`GELU.forward` computes."""
    return gelu_parts(x)[0]


class GELU(Module):
    """Gaussian error linear unit, tanh approximation (see the module docstring)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        y, t = gelu_parts(x)
        self._cache = (x, t)
        return y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x, t = self._cache
        return dy * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * K * x * x))
