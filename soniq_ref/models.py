"""Models: a composable ``Sequential`` and the stock networks.

``Sequential`` runs its layers in order and keeps a parameter registry: the
parameter ``name`` of layer ``i`` is registered as ``"i.name"`` (``"3.weight"``,
``"3.theta_w"``), pointing at the layer's own array, so an optimizer that
updates the registry in place updates the layers.

``mlp``, ``cnn``, ``resnet`` and ``vit`` build the networks the trainer knows by name. All take
8-bit images ``[B, C, H, W]`` (as float ``k / 255``): the first quantized layer
reads the pixels as 8-bit codes; every later quantized layer learns its own
input precision per channel (a ReLU in front of it makes the float baseline a
ReLU network; in the quantized modes its input clip does the same).
"""

from __future__ import annotations

import numpy as np

from .layers import QuantConv2d, QuantLayer, QuantLinear
from .layers.activations import ReLU
from .layers.batchnorm import BatchNorm1d, BatchNorm2d
from .layers.flatten import Flatten
from .layers.global_pool import PooledQuantLinear
from .layers.module import Module
from .layers.pooling import MaxPool2d, pool_output_size
from .layers.residual import ResidualBlock

MODEL_NAMES = ("cnn", "mlp", "resnet", "vit")
RESNET_DEPTHS = (8, 14, 20, 26, 32)     # 6 n + 2: n blocks per stage, three stages
DEFAULT_DEPTHS = {"resnet": 8, "vit": 4}   # resnet: quantized layers; vit: blocks


class Sequential(Module):
    """Layers applied in order; ``params``/``grads`` are the registry ``"i.name" -> array``."""

    def __init__(self, layers):
        super().__init__()
        self.layers = list(layers)
        if not all(isinstance(l, Module) for l in self.layers):
            raise TypeError("layers must all be Module instances")
        self.params = {f"{i}.{name}": p for i, l in enumerate(self.layers)
                       for name, p in l.params.items()}

    def forward(self, x: np.ndarray) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, dy: np.ndarray) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        self.grads = {f"{i}.{name}": g for i, l in enumerate(self.layers)
                      for name, g in l.grads.items()}
        return dy

    def train(self, mode: bool = True) -> "Sequential":
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    def quant_layers(self) -> list[QuantLayer]:
        """The quantized layers, in order (those inside residual blocks included)."""
        return [q for _, l in self.named_layers() for q in ([l] if isinstance(l, QuantLayer)
                                                             else [])]

    def named_layers(self) -> list:
        """(name, layer) of every layer that is not a container, in order: ``"i"`` for
        layer ``i``, ``"i.child"`` for a child of a block (the prefix of its parameters'
        registry names)."""
        named = []
        for i, layer in enumerate(self.layers):
            children = getattr(layer, "named_layers", None)
            named += [(f"{i}.{n}", c) for n, c in children()] if children else \
                [(str(i), layer)]
        return named

    def set_mode(self, mode: str) -> None:
        """Put every quantized layer in ``mode`` ('float', 'noise' or 'exact')."""
        for layer in self.quant_layers():
            layer.set_mode(mode)

    def collect_grads(self) -> dict:
        """Re-read the layers' ``grads`` (after something added to them, e.g. the budget)."""
        self.grads = {f"{i}.{name}": g for i, l in enumerate(self.layers)
                      for name, g in l.grads.items()}
        return self.grads


def _check_shape(input_shape) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    return shape


def _quant_kwargs(weight_palette, act_palette, seed, index):
    return dict(weight_palette=weight_palette, act_palette=act_palette,
                seed=[int(seed), index], first_layer=index == 0)


def mlp(input_shape, n_classes: int, *, hidden=(128, 64), weight_palette=(1, 4),
        act_palette=(2, 8), seed: int = 0) -> Sequential:
    """Flatten -> [QuantLinear -> BatchNorm1d -> ReLU] per hidden width -> QuantLinear."""
    c, h, w = _check_shape(input_shape)
    widths = [c * h * w] + [int(v) for v in hidden]
    layers = [Flatten()]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [QuantLinear(n_in, n_out, **_quant_kwargs(weight_palette, act_palette, seed, i)),
                   BatchNorm1d(n_out), ReLU()]
    layers.append(QuantLinear(widths[-1], int(n_classes),
                              **_quant_kwargs(weight_palette, act_palette, seed, len(hidden))))
    return Sequential(layers)


def cnn(input_shape, n_classes: int, *, channels=(32, 64), weight_palette=(1, 4),
        act_palette=(2, 8), seed: int = 0) -> Sequential:
    """Per width: QuantConv2d 3x3 (pad 1) -> BatchNorm2d -> ReLU -> MaxPool2d 2; then
    Flatten -> QuantLinear classifier. A block whose input is smaller than 2x2 skips
    the pooling."""
    c, h, w = _check_shape(input_shape)
    layers = []
    for i, width in enumerate(int(v) for v in channels):
        layers += [QuantConv2d(c, width, 3, padding=1,
                               **_quant_kwargs(weight_palette, act_palette, seed, i)),
                   BatchNorm2d(width), ReLU()]
        if min(h, w) >= 2:
            layers.append(MaxPool2d(2))
            h, w = pool_output_size(h, 2, 2), pool_output_size(w, 2, 2)
        c = width
    layers += [Flatten(), QuantLinear(c * h * w, int(n_classes),
                                      **_quant_kwargs(weight_palette, act_palette, seed,
                                                      len(channels)))]
    return Sequential(layers)


def resnet(input_shape, n_classes: int, *, depth: int = DEFAULT_DEPTHS["resnet"], width: int = 16,
           weight_palette=(1, 4), act_palette=(2, 8), seed: int = 0) -> Sequential:
    """A CIFAR-style ResNet of ``depth = 6 n + 2`` quantized layers (ResNet-8/14/20...).

    Stem: QuantConv2d 3x3 (pad 1, reads the pixels) -> BatchNorm2d -> ReLU; then three
    stages of ``n`` :class:`~soniq_ref.layers.residual.ResidualBlock` each, widths
    ``width``, ``2 width``, ``4 width``; the first block of the second and third stage has
    stride 2 and a 1x1 projection on its skip (unless the input is already 1 pixel
    wide); then global average pooling inside the classifier
    (:class:`~soniq_ref.layers.global_pool.PooledQuantLinear`). 28x28 inputs end at
    7x7, 32x32 at 8x8, 8x8 at 2x2.
    """
    c, h, w = _check_shape(input_shape)
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(map(str, RESNET_DEPTHS))} "
                         f"(6 n + 2), got {depth!r}")
    if type(width) is not int or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    n = (depth - 2) // 6
    index = 0
    layers = [QuantConv2d(c, width, 3, padding=1,
                          **_quant_kwargs(weight_palette, act_palette, seed, index)),
              BatchNorm2d(width), ReLU()]
    c = width
    for stage in range(3):
        for block in range(n):
            stride = 2 if stage > 0 and block == 0 and min(h, w) > 1 else 1
            index += 1
            out = width * 2 ** stage
            layers.append(ResidualBlock(c, out, stride=stride, weight_palette=weight_palette,
                                        act_palette=act_palette, seed=[int(seed), index]))
            h, w, c = (h - 1) // stride + 1, (w - 1) // stride + 1, out
    layers.append(PooledQuantLinear(c, int(n_classes), h * w,
                                    **_quant_kwargs(weight_palette, act_palette, seed,
                                                    index + 1)))
    return Sequential(layers)


VIT_POOLS = ("mean", "cls")


def vit(input_shape, n_classes: int, *, patch: int | None = None, dim: int = 64,
        heads: int = 4, depth: int = DEFAULT_DEPTHS["vit"], mlp_ratio: int = 2, pool: str = "mean",
        activation: str = "relu", weight_palette=(1, 4), act_palette=(2, 8), seed: int = 0,
        dtype=np.float32) -> Sequential:
    """A Vision Transformer whose every affine map is a ``QuantLinear``.

    PatchEmbedding (p x p patches, its projection reads the pixels; ``patch`` defaults
    to H / 4, a 4 x 4 grid of 16 tokens) -> [ClassToken, with ``pool="cls"``] ->
    PositionEmbedding -> ``depth`` :class:`~soniq_ref.layers.transformer_block.TransformerBlock`
    (``heads`` heads, MLP ``mlp_ratio * dim`` wide, ``activation`` relu or gelu) ->
    LayerNorm -> TokenMean (``pool="mean"``) or FirstToken (``"cls"``) -> QuantLinear
    classifier. Every map that reads a LayerNorm's output, the attention's output or a
    GELU's has a signed input (``signed_input=True``); the ReLU's reader and the patch
    projection read non-negative values.
    """
    from .layers.layernorm import LayerNorm
    from .layers.tokens import (ClassToken, FirstToken, PatchEmbedding, PositionEmbedding,
                                TokenMean)
    from .layers.transformer_block import TransformerBlock

    c, h, w = _check_shape(input_shape)
    if patch is None:
        if h % 4 or w % 4:
            raise ValueError(f"the default patch is H / 4, but H = {h}, W = {w} are not "
                             f"multiples of 4: pass patch")
        patch = h // 4
    if type(patch) is not int or patch < 1 or h % patch or w % patch:
        raise ValueError(f"patch must be a positive integer dividing H = {h} and W = {w}, "
                         f"got {patch!r}")
    for name, value in (("dim", dim), ("heads", heads), ("depth", depth)):
        if type(value) is not int or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if pool not in VIT_POOLS:
        raise ValueError(f"pool must be one of {', '.join(VIT_POOLS)}, got {pool!r}")
    palettes = dict(weight_palette=weight_palette, act_palette=act_palette)

    def quant(**fixed):
        return lambda n_in, n_out, *, seed, dtype: QuantLinear(n_in, n_out, seed=seed,
                                                               dtype=dtype, **palettes, **fixed)

    tokens = (h // patch) * (w // patch) + (pool == "cls")
    layers = [PatchEmbedding(c, patch, dim, [int(seed), 0], dtype=dtype,
                             linear=quant(first_layer=True))]
    if pool == "cls":
        layers.append(ClassToken(dim, dtype=dtype))
    layers.append(PositionEmbedding(tokens, dim, [int(seed), 1], dtype=dtype))
    layers += [TransformerBlock(dim, heads, mlp_ratio=mlp_ratio, activation=activation,
                                seed=[int(seed), 2 + i], dtype=dtype, linear=quant(),
                                signed_linear=quant(signed_input=True))
               for i in range(depth)]
    layers += [LayerNorm(dim, dtype=dtype), TokenMean() if pool == "mean" else FirstToken(),
               quant(signed_input=True)(dim, int(n_classes), seed=[int(seed), 2 + depth],
                                        dtype=dtype)]
    return Sequential(layers)


def build_model(name: str, input_shape, n_classes: int, **kwargs) -> Sequential:
    """``mlp``, ``cnn``, ``resnet`` or ``vit`` by name."""
    if name not in MODEL_NAMES:
        raise ValueError(f"model must be one of {', '.join(MODEL_NAMES)}, got {name!r}")
    return {"cnn": cnn, "mlp": mlp, "resnet": resnet, "vit": vit}[name](input_shape, n_classes,
                                                                         **kwargs)
