"""What the stages of a Transformer share: float32 tokens, named quantized maps.

A token stage (``patch_embed``, ``transformer_block``, ``token_head``) runs its
quantized maps (:class:`~.token_linear.TokenLinear`) on the backend's contract
functions and everything between them in float32 NumPy code shared with the
training layers, so it is not ``fusable`` (a model containing one never uses the
backend's fused kernels) and has no ``code_bound`` and no ONNX form.
"""

from __future__ import annotations

from .base import Stage


class TokenStage(Stage):
    """Base of the token stages; a subclass lists its maps in :meth:`named_maps`."""

    fusable = False

    def named_maps(self) -> list:
        """(name, :class:`~.token_linear.TokenLinear`) of its maps, in run order."""
        raise NotImplementedError

    def quant_parts(self) -> list:
        return [m.layer for _, m in self.named_maps()]

    def code_bound(self, bound, shape, out_shape):
        raise ValueError(f"a {self.kind} stage hands on float32 tokens, not codes: it runs "
                         f"on the contract functions only")

    def other_float32_values(self) -> int:
        """Float numbers besides the maps' weights and biases (LayerNorms, tables)."""
        return 0

    def float32_values(self) -> int:
        return sum(p.float32_values() for p in self.quant_parts()) + \
            self.other_float32_values()

    def details(self) -> dict:
        """The stage's own fields for ``describe`` (heads, activation, pooling...)."""
        return {}

    def describe(self) -> dict:
        parts = {name: m.layer.describe() for name, m in self.named_maps()}
        weights = sum(int(p.w_codes.size) for p in self.quant_parts())
        bits = sum(p.weight_bits_total() for p in self.quant_parts())
        return {**self.details(), **parts, "mean_weight_bits": bits / weights}

    def summary(self) -> str:
        """One line per map: its name, weights, weight bits and input bits."""
        return "\n".join(f" {name:<5}{m.layer.summary()}" for name, m in self.named_maps())
