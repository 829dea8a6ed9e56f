"""A LayerNorm inside a token stage: its parameters, its forward, its file tensors.

x float32 [..., D] -> ``layer_norm(x, weight, bias, eps)``
(:func:`soniq_ref.layers.layernorm.layer_norm`, the function the training layer's
forward calls), weight and bias float32 [D], ``eps`` a float32. In the file: the
tensors ``<prefix>.weight`` and ``<prefix>.bias`` (F32 [D], finite); ``eps`` is a
field of the stage's manifest entry (``ln_eps``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..layers.layernorm import layer_norm

EPS_KEY = "ln_eps"     # the manifest field of a token stage that holds its LayerNorms' eps


@dataclass
class LayerNormParams:
    """weight, bias float32 [D]; eps float32 > 0."""

    weight: np.ndarray
    bias: np.ndarray
    eps: np.float32

    @classmethod
    def from_layer(cls, layer) -> "LayerNormParams":
        """The parameters of a :class:`~soniq_ref.layers.layernorm.LayerNorm` (copies)."""
        return cls(np.array(layer.params["weight"], np.float32),
                   np.array(layer.params["bias"], np.float32), np.float32(layer.eps))

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float32 ``layer_norm(x, weight, bias, eps)`` of float32 x [..., D]."""
        return layer_norm(x, self.weight, self.bias, self.eps)

    def float32_values(self) -> int:
        return 2 * self.dim

    @staticmethod
    def file_tensors(prefix: str) -> set:
        return {f"{prefix}.weight", f"{prefix}.bias"}

    def to_file(self, prefix: str, tensors: dict) -> None:
        tensors[f"{prefix}.weight"] = np.asarray(self.weight, np.float32)
        tensors[f"{prefix}.bias"] = np.asarray(self.bias, np.float32)

    @classmethod
    def from_file(cls, entry, name: str, dim: int, eps: np.float32) -> "LayerNormParams":
        """The LayerNorm ``name`` of ``entry`` (a :class:`~soniq_ref.fileschema.StageEntry`):
        tensors ``<index>.<name>.weight`` / ``.bias``, F32 [dim], finite."""
        values = [finite_tensor(entry, f"{name}.{part}", [dim]) for part in ("weight", "bias")]
        return cls(*values, np.float32(eps))


def finite_tensor(entry, name: str, shape: list) -> np.ndarray:
    """Tensor ``name`` of ``entry``, F32 of ``shape``, every value finite."""
    values = entry.tensor(name, "F32", shape)
    if not np.all(np.isfinite(values)):
        entry.fail(f"tensor '{entry.name(name)}' must be finite")
    return values
