"""``token_head``: the end of a Transformer, float32 tokens to logits.

x float32 [B, T, D] -> float32 logits [B, n_classes], in this order::

    z = layer_norm(x, ln)                          float32 [B, T, D]
    v = token_mean(z) | first_token(z)             ``pool`` mean: sum over T, then / T;
                                                   cls: token 0 -- [B, D]
    y = classifier(v)                              signed input, [B, n_classes]

(the functions of :mod:`soniq_ref.layers.layernorm` and :mod:`soniq_ref.layers.tokens`
the training layers call; ``classifier`` a :class:`~.token_linear.TokenLinear`). It
ends the model.

In the file: ``pool`` (``mean`` or ``cls``), ``ln_eps``, the object ``classifier`` and
the tensors ``<i>.ln.weight``, ``<i>.ln.bias`` (F32 [D]).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.tokens import POOLS
from .layer_norm import EPS_KEY, LayerNormParams
from .token_linear import TokenLinear
from .token_stage import TokenStage


@dataclass
class TokenHeadStage(TokenStage):
    """ln (:class:`LayerNormParams`), ``pool`` (a key of :data:`POOLS`), classifier."""

    ln: LayerNormParams
    pool: str
    classifier: TokenLinear

    kind = "token_head"
    reads_tokens = True
    final = True
    gives_logits = True

    @property
    def out_channels(self) -> int:
        return self.classifier.out_features

    def named_maps(self) -> list:
        return [("head", self.classifier)]

    def output_shape(self, shape: tuple) -> tuple:
        return (self.out_channels,)

    def run(self, codes, run):
        return self.classifier.apply(POOLS[self.pool](self.ln.apply(codes)), run)

    def other_float32_values(self) -> int:
        return self.ln.float32_values()

    def details(self) -> dict:
        return {"pool": self.pool}

    # ------------------------------------------------------------------ file

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        return {"type", "pool", EPS_KEY, "classifier"}

    @classmethod
    def file_tensors(cls, index: int, kind: str, last: bool) -> set:
        return LayerNormParams.file_tensors(f"{index}.ln") | \
            TokenLinear.file_tensors(f"{index}.classifier")

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        self.ln.to_file(f"{index}.ln", tensors)
        return {"type": self.kind, "pool": self.pool, EPS_KEY: float(self.ln.eps),
                "classifier": self.classifier.to_file(f"{index}.classifier", tensors)}

    @classmethod
    def from_file(cls, entry) -> "TokenHeadStage":
        shape = entry.shape
        if len(shape) != 2:
            entry.fail(f"it reads tokens [T, D], the previous stage gives {list(shape)}")
        if not entry.last:
            entry.fail("it gives the logits: it must be the last stage")
        pool = entry.fields["pool"]
        if not isinstance(pool, str) or pool not in POOLS:
            entry.fail(f"'pool' must be one of {', '.join(POOLS)}, got {pool!r}"[:200])
        dim = shape[1]
        ln = LayerNormParams.from_file(entry, "ln", dim, entry.float32(EPS_KEY))
        return cls(ln, pool, TokenLinear.from_file(entry, "classifier", dim, "signed"))
