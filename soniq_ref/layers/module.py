"""The layer interface: explicit forward and backward, no autograd.

A layer keeps its trainable arrays in ``params`` (name -> ndarray). ``forward``
caches what ``backward`` needs; ``backward(dy)`` returns ``dx`` and writes the
gradient of every parameter into ``grads`` under the same name (overwriting,
not accumulating). Parameter names carry meaning for the optimizers: the
precision parameters are called ``theta_w`` / ``theta_a`` and get their own
optimizer (see :mod:`soniq_ref.train`).
"""

from __future__ import annotations

import numpy as np


class Module:
    """Base class of every layer."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def train(self, mode: bool = True) -> "Module":
        self.training = mode
        return self

    def eval(self) -> "Module":
        return self.train(False)


class Container(Module):
    """A layer made of child layers, listed by ``named_layers()`` as (name, layer).

    Its ``params`` and ``grads`` are the children's, under ``"name.param"``; ``train``
    reaches every child. A subclass builds its children, then calls
    :meth:`collect_params`. A parameter a child shares with another (the same array
    registered twice) is listed once: :meth:`_shared` names the copies to leave out.
    """

    def named_layers(self) -> list:
        raise NotImplementedError

    def _shared(self, layer, name: str) -> bool:
        """Whether ``layer``'s parameter ``name`` is another child's, listed there."""
        return False

    def collect_params(self) -> None:
        """Register the children's arrays (the same objects) under ``"name.param"``."""
        self.params = {f"{n}.{k}": p for n, layer in self.named_layers()
                       for k, p in layer.params.items() if not self._shared(layer, k)}

    @property
    def grads(self) -> dict:
        """The children's gradients under the container's parameter names (read each
        time, so that what the budget adds to a child's ``grads`` shows here)."""
        return {f"{n}.{k}": g for n, layer in self.named_layers()
                for k, g in layer.grads.items() if not self._shared(layer, k)}

    @grads.setter
    def grads(self, value) -> None:      # Module.__init__ sets {}; the children hold them
        pass

    def train(self, mode: bool = True) -> "Container":
        self.training = mode
        for _, layer in self.named_layers():
            layer.train(mode)
        return self
