"""``transformer_block``: a pre-norm Transformer block on float32 tokens.

x float32 [B, T, D] -> float32 [B, T, D], in this order (the functions the training
layers call, :mod:`soniq_ref.layers.transformer_block`)::

    q|k|v = qkv(layer_norm(x, ln1))                signed input, [B, T, 3D]
    o     = attention_core(q|k|v, heads).o        S = (q k^T) / sqrt(d), P = softmax(S),
                                                   O = P v, heads concatenated: float32
    h     = x + out(o)                             signed input; one float32 add
    u     = act(fc1(layer_norm(h, ln2)))           signed input; act = relu | gelu
    y     = h + fc2(u)                             fc2 reads unsigned values after a ReLU,
                                                   signed after a GELU; one float32 add

Each map is a :class:`~.token_linear.TokenLinear` (its integer accumulator on the
backend's ``linear_int``, then ``epilogue``); everything else is float32 NumPy, the
same on every backend.

In the file: ``heads``, ``activation`` (``relu`` or ``gelu``), ``ln_eps`` (the float32
eps of both LayerNorms), the objects ``qkv``, ``out``, ``fc1``, ``fc2`` and the tensors
``<i>.ln1.weight``, ``<i>.ln1.bias``, ``<i>.ln2.weight``, ``<i>.ln2.bias`` (F32 [D]).
The loader refuses a ``D`` not divisible by ``heads``, maps whose shapes do not chain
(qkv [3D, D], out [D, D], fc1 [M, D], fc2 [D, M]) and an attention whose [H, T, T]
scores exceed the per-sample geometry limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..layers.activations import relu
from ..layers.attention import attention_core
from ..layers.gelu import gelu
from ..layers.transformer_block import ACTIVATIONS
from .base import check_size
from .layer_norm import EPS_KEY, LayerNormParams
from .token_linear import TokenLinear
from .token_stage import TokenStage

ACTIVATION_FUNCTIONS = {"relu": relu, "gelu": gelu}
MAPS = ("qkv", "out", "fc1", "fc2")


def fc2_input(activation: str) -> str:
    """What fc2 reads: ``unsigned`` after a ReLU, ``signed`` after a GELU."""
    return "unsigned" if activation == "relu" else "signed"


@dataclass
class TransformerBlockStage(TokenStage):
    """ln1, ln2 (:class:`LayerNormParams`), qkv, out, fc1, fc2 (:class:`TokenLinear`),
    ``heads``, ``activation`` (see the module docstring)."""

    ln1: LayerNormParams
    qkv: TokenLinear
    out: TokenLinear
    ln2: LayerNormParams
    fc1: TokenLinear
    fc2: TokenLinear
    heads: int
    activation: str

    kind = "transformer_block"
    reads_tokens = True
    gives_tokens = True

    def named_maps(self) -> list:
        return [(name, getattr(self, name)) for name in MAPS]

    def output_shape(self, shape: tuple) -> tuple:
        return tuple(int(v) for v in shape)

    def run(self, codes, run):
        x = codes
        o = attention_core(self.qkv.apply(self.ln1.apply(x), run), self.heads).o
        h = x + self.out.apply(o, run)
        u = ACTIVATION_FUNCTIONS[self.activation](self.fc1.apply(self.ln2.apply(h), run))
        return h + self.fc2.apply(u, run)

    def other_float32_values(self) -> int:
        return self.ln1.float32_values() + self.ln2.float32_values()

    def details(self) -> dict:
        return {"heads": int(self.heads), "activation": self.activation}

    # ------------------------------------------------------------------ file

    @classmethod
    def file_keys(cls, kind: str, last: bool) -> set:
        return {"type", "heads", "activation", EPS_KEY, *MAPS}

    @classmethod
    def file_tensors(cls, index: int, kind: str, last: bool) -> set:
        names = LayerNormParams.file_tensors(f"{index}.ln1") | \
            LayerNormParams.file_tensors(f"{index}.ln2")
        return names.union(*(TokenLinear.file_tensors(f"{index}.{m}") for m in MAPS))

    def to_file(self, index: int, last: bool, tensors: dict) -> dict:
        if self.ln1.eps != self.ln2.eps:
            raise ValueError(f"stage {index} ({self.kind}): the two LayerNorms have different "
                             f"eps, the format stores one")
        self.ln1.to_file(f"{index}.ln1", tensors)
        self.ln2.to_file(f"{index}.ln2", tensors)
        return {"type": self.kind, "heads": int(self.heads), "activation": self.activation,
                EPS_KEY: float(self.ln1.eps),
                **{m: getattr(self, m).to_file(f"{index}.{m}", tensors) for m in MAPS}}

    @classmethod
    def from_file(cls, entry) -> "TransformerBlockStage":
        shape = entry.shape
        if len(shape) != 2:
            entry.fail(f"it reads tokens [T, D], the previous stage gives {list(shape)}")
        if entry.last:
            entry.fail("it gives tokens, not logits: it cannot end the model")
        tokens, dim = shape
        heads = entry.int("heads", 1)
        if dim % heads:
            entry.fail(f"D = {dim} is not divisible by heads = {heads}")
        check_size((heads, tokens, tokens), f"{entry.where} attention scores")
        activation = entry.fields["activation"]
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            entry.fail(f"'activation' must be one of {', '.join(ACTIVATIONS)}, got "
                       f"{activation!r}"[:200])
        eps = entry.float32(EPS_KEY)
        ln1, ln2 = (LayerNormParams.from_file(entry, n, dim, eps) for n in ("ln1", "ln2"))
        qkv = TokenLinear.from_file(entry, "qkv", dim, "signed")
        out = TokenLinear.from_file(entry, "out", dim, "signed")
        fc1 = TokenLinear.from_file(entry, "fc1", dim, "signed")
        fc2 = TokenLinear.from_file(entry, "fc2", fc1.out_features, fc2_input(activation))
        for name, layer, want in (("qkv", qkv, 3 * dim), ("out", out, dim), ("fc2", fc2, dim)):
            if layer.out_features != want:
                entry.fail(f"{name} gives {layer.out_features} features, the block needs "
                           f"{want} (D = {dim})")
        return cls(ln1, qkv, out, ln2, fc1, fc2, heads, activation)
