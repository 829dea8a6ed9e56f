"""The deploy stages of a Vision Transformer (:func:`soniq_ref.models.vit`).

Supported pattern (exactly what ``vit`` builds)::

    PatchEmbedding [ClassToken] PositionEmbedding TransformerBlock* LayerNorm
    (TokenMean | FirstToken) QuantLinear

becomes ``patch_embed`` (or ``patch_embed_cls``), one ``transformer_block`` per block
and ``token_head`` (:mod:`soniq_ref.stages`). Every map keeps the codes rule of its
input quantizer (pixels, unsigned or signed, with its float32 clip) and the
``scale = float32(w_step * s_a)`` and bias the layer's exact forward uses; the
LayerNorms, the position table and the class token are copied as float32.
"""

from __future__ import annotations

from .layers.layernorm import LayerNorm
from .layers.quant_linear import QuantLinear
from .layers.tokens import ClassToken, FirstToken, PatchEmbedding, PositionEmbedding, TokenMean
from .layers.transformer_block import TransformerBlock
from .stages.layer_norm import LayerNormParams
from .stages.patch_embed import PatchEmbedStage
from .stages.token_head import TokenHeadStage
from .stages.token_linear import TokenLinear
from .stages.transformer_block import TransformerBlockStage, fc2_input

PATTERN = ("PatchEmbedding [ClassToken] PositionEmbedding TransformerBlock* LayerNorm "
           "(TokenMean | FirstToken) QuantLinear")


def is_token_model(model) -> bool:
    """Whether ``model`` starts with a patch embedding (a Vision Transformer)."""
    return bool(model.layers) and isinstance(model.layers[0], PatchEmbedding)


def _refuse(layer) -> None:
    what = "the end of the layers" if layer is None else f"layer {type(layer).__name__}"
    raise ValueError(f"cannot export {what} here: a Vision Transformer exports as {PATTERN}")


def _map(layer, where: str, want: str) -> TokenLinear:
    """The map of ``layer``, checked to read what its place in the stage says (``want``)."""
    if not isinstance(layer, QuantLinear):
        raise ValueError(f"{where}: expected a QuantLinear, got {type(layer).__name__}")
    mapping = TokenLinear.from_layer(layer, where)
    if mapping.input != want:
        raise ValueError(f"{where}: its input is {mapping.input}, the deploy stage reads "
                         f"{want} values there")
    return mapping


def token_stages(model) -> list:
    """The stages of ``model`` (see the module docstring); ValueError naming the first
    layer that does not fit the pattern or whose bits are not fixed."""
    layers = list(model.layers)
    embed = layers.pop(0)
    token = None
    if layers and isinstance(layers[0], ClassToken):
        token = layers.pop(0).params["token"]
    if not layers or not isinstance(layers[0], PositionEmbedding):
        _refuse(layers[0] if layers else None)
    table = layers.pop(0).params["table"]
    stages = [PatchEmbedStage(_map(embed.proj, "patch projection", "pixels"),
                              int(embed.patch), table.astype("float32").copy(),
                              None if token is None else token.astype("float32").copy())]
    while layers and isinstance(layers[0], TransformerBlock):
        block = layers.pop(0)
        where = f"block {len(stages) - 1}"
        stages.append(TransformerBlockStage(
            LayerNormParams.from_layer(block.ln1),
            _map(block.attn.qkv, f"{where} qkv", "signed"),
            _map(block.attn.out, f"{where} out", "signed"),
            LayerNormParams.from_layer(block.ln2),
            _map(block.fc1, f"{where} fc1", "signed"),
            _map(block.fc2, f"{where} fc2", fc2_input(block.activation)),
            int(block.attn.heads), block.activation))
    if len(layers) != 3 or not isinstance(layers[0], LayerNorm) or \
            not isinstance(layers[1], (TokenMean, FirstToken)):
        _refuse(layers[0] if layers else None)
    pool = "mean" if isinstance(layers[1], TokenMean) else "cls"
    stages.append(TokenHeadStage(LayerNormParams.from_layer(layers[0]), pool,
                                 _map(layers[2], "classifier", "signed")))
    return stages
