"""The deployable integer model: uint8 pixels in, float32 logits out.

A trained :class:`~soniq_ref.models.Sequential` (quantized layers in exact mode,
bits fixed) becomes a list of stages, one object per layer that computes
(:mod:`soniq_ref.stages`): ``QuantStage`` (a quantized layer, the following batch
norm folded into its epilogue, its output requantized to the next layer's input
codes), ``PoolStage`` (max pooling on the codes), ``FlattenStage``,
``ResidualStage`` (a residual block: two convolutions, the skip, the add and the
requantization) and ``PooledLinearStage`` (global average pooling and the
classifier). A Vision Transformer becomes ``PatchEmbedStage``,
``TransformerBlockStage`` per block and ``TokenHeadStage``
(:mod:`soniq_ref.token_export`): after the first, its stages hand float32 tokens
[B, T, D] from one to the next instead of uint8 codes. Each stage type
knows its shapes, how it runs on a backend, its description and its part of the
``.soniq`` file, so a new stage type is one class registered in
``soniq_ref.stages.STAGE_TYPES``.

``forward(x, backend)`` calls only contract functions of the backend
(``pack_weights`` once per backend, ``linear_int``/``conv2d_int``, ``epilogue``,
``requantize``), so every backend plugs in unchanged and must give the same
logits bit for bit. The backend's kernels make it faster when they offer the
optional fused kernels (:func:`soniq_ref.contract.deploy_kernels`): their
``linear_int``/``conv2d_int``, fused ``linear_requantize``/``conv2d_requantize``,
``epilogue`` and ``max_pool_codes`` skip the contract's scans of arrays by value
(and may use fewer threads on small work). They are
used only when the model's parameters and the bits it hands from stage to stage
check out (once per backend, :meth:`DeployModel._checked_chain`); forward then
checks the input codes of the first quantized stage itself, and every later
stage consumes codes the model produced, within their bits by construction.
The fused forms take per-feature ``out_bits``/``out_ratio`` per position of the
[B, O, H, W] accumulator (no repeated scale and bias).
"""

from __future__ import annotations

import threading

import numpy as np

from . import checks
from .backend import get_backend
from .contract import deploy_kernels
from .layers import QuantConv2d, QuantLayer
from .layers.activations import ReLU
from .layers.batchnorm import BatchNorm
from .layers.flatten import Flatten
from .layers.global_pool import PooledQuantLinear
from .layers.pooling import MaxPool2d
from .layers.residual import ResidualBlock
from .stages import (BackendRun, FlattenStage, PooledLinearStage, PoolStage, QuantStage,
                     ResidualStage, check_size, link)

MAX_GEOMETRY = checks.MAX_GEOMETRY

__all__ = ["DeployModel", "FlattenStage", "PoolStage", "QuantStage", "check_size",
           "stage_output_shape"]


def stage_output_shape(stage, shape: tuple) -> tuple:
    """Per-sample output shape of ``stage`` for per-sample input ``shape`` (Python ints)."""
    return stage.output_shape(tuple(int(v) for v in shape))


def _new_stage(layer: QuantLayer) -> QuantStage:
    codes, w_bits, w_step = layer.quantized_weights()
    s_a = np.float64(layer.act_step())
    conv = isinstance(layer, QuantConv2d)
    pooled = isinstance(layer, PooledQuantLinear)
    return (PooledLinearStage if pooled else QuantStage)(
        kind="conv" if conv else "avgpool_linear" if pooled else "linear",
        w_codes=codes.copy(), w_bits=w_bits.copy(),
        a_bits=np.asarray(layer.a_bits, np.uint8).copy(), act_bits_hi=int(layer.act_bits_hi),
        weight_palette=tuple(layer.weight_palette), act_palette=tuple(layer.act_palette),
        stride=int(layer.stride) if conv else 1, padding=int(layer.padding) if conv else 0,
        scale=(w_step.astype(np.float64) * s_a).astype(np.float32),
        bias=layer.params["bias"].astype(np.float32).copy(),
        **({"positions": layer.positions} if pooled else {}))


def _fold_bn(stage: QuantStage, bn: BatchNorm) -> None:
    a, b = bn.folded()
    stage.scale = (a * stage.scale.astype(np.float64)).astype(np.float32)
    stage.bias = (a * stage.bias.astype(np.float64) + b).astype(np.float32)


def _block_stage(block: ResidualBlock, shape: tuple) -> ResidualStage:
    """The residual stage of a block in exact mode: BN1, BN2 and the projection's batch
    norm folded into their convolutions' epilogues, conv1 requantized to conv2's input."""
    if block.conv1.w_bits is None or block.conv2.w_bits is None or \
            (block.proj is not None and block.proj.w_bits is None):
        raise ValueError("every quantized layer needs fixed bits before export")
    conv1, conv2 = _new_stage(block.conv1), _new_stage(block.conv2)
    _fold_bn(conv1, block.bn1)
    _fold_bn(conv2, block.bn2)
    proj = None
    if block.proj is not None:
        proj = _new_stage(block.proj)
        _fold_bn(proj, block.bnp)
    link(conv1, conv1.output_shape(shape), [], np.asarray(block.conv2.a_bits, np.uint8),
         block.conv2.act_ratio().astype(np.float32))
    conv1.out_clip = np.float32(block.conv2.act_clip())
    return ResidualStage(conv1, conv2, proj,
                         skip_step=None if proj is not None else block.conv1.act_step())


def _input_layer(layer):
    """The quantized layer that reads ``layer``'s input codes (a block's conv1)."""
    return layer.conv1 if isinstance(layer, ResidualBlock) else layer


def _link_layer(stage, shape: tuple, between: list, nxt) -> None:
    """Give ``stage`` the requantization producing ``nxt``'s input codes."""
    nxt = _input_layer(nxt)
    link(stage, shape, between, np.asarray(nxt.a_bits, np.uint8),
         nxt.act_ratio().astype(np.float32))
    clip = nxt.act_clip()                          # None: the next layer reads pixels
    stage.out_clip = None if clip is None else np.float32(clip)


MAX_PREPARED = 4     # backends whose packed weights a DeployModel keeps


class DeployModel:
    """Stages from uint8 images [B, *input_shape] to float32 logits [B, n_classes]."""

    def __init__(self, input_shape, stages: list, metadata=None):
        self.input_shape = tuple(int(v) for v in input_shape)
        self.stages = list(stages)
        self.metadata = dict(metadata or {})     # free-form; saved in the .soniq header
        self._packed: dict[str, tuple] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Copies and pickles carry the stages, not the per-backend cache or its lock."""
        state = dict(self.__dict__)
        state.update(_packed={}, _lock=None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

    @property
    def quant_stages(self) -> list[QuantStage]:
        """Every quantized layer, those inside residual stages included, in run order."""
        return [part for s in self.stages for part in s.quant_parts()]

    @property
    def n_classes(self) -> int:
        return self.quant_stages[-1].out_channels

    @classmethod
    def from_model(cls, model, input_shape) -> "DeployModel":
        """Export a trained model whose quantized layers have fixed bits.

        Supported pattern: ``{QuantLayer [BatchNorm] [ReLU] | ResidualBlock}
        {MaxPool2d | Flatten} ...``, ending with a QuantLayer (the classifier: a
        QuantLinear, or a PooledQuantLinear reading [C, H, W]); or a Vision Transformer
        as :func:`soniq_ref.models.vit` builds it (:mod:`soniq_ref.token_export`).
        """
        from .token_export import is_token_model, token_stages

        if is_token_model(model):
            model_stages = token_stages(model)
            shape = tuple(int(v) for v in input_shape)
            for stage in model_stages:          # shapes checked before anything runs
                shape = stage.output_shape(shape)
            return cls(input_shape, model_stages)
        stages, shape = [], tuple(int(v) for v in input_shape)
        current, out_shape, between = None, None, []
        for layer in model.layers:
            if isinstance(layer, (QuantLayer, ResidualBlock)):
                if isinstance(layer, QuantLayer) and layer.w_bits is None:
                    raise ValueError("every quantized layer needs fixed bits before export")
                if current is not None:
                    _link_layer(current, out_shape, between, layer)
                current = _new_stage(layer) if isinstance(layer, QuantLayer) else \
                    _block_stage(layer, shape)
                stages.append(current)
                between = []
                shape = out_shape = current.output_shape(shape)
            elif isinstance(layer, BatchNorm):
                if current is None or between or isinstance(current, ResidualStage):
                    raise ValueError("batch norm must directly follow a quantized layer "
                                     "to be folded into its epilogue")
                _fold_bn(current, layer)
            elif isinstance(layer, (MaxPool2d, Flatten)):
                stage = (PoolStage(layer.kernel, layer.stride) if isinstance(layer, MaxPool2d)
                         else FlattenStage())
                between.append((stage, shape))
                stages.append(stage)
                shape = stage.output_shape(shape)
            elif not isinstance(layer, ReLU):
                raise ValueError(f"cannot export layer {type(layer).__name__}")
        if not stages or stages[-1] is not current or not current.gives_logits:
            raise ValueError("the model must end with a quantized linear layer (the "
                             "classifier, logits [B, n_classes])")
        return cls(input_shape, stages)

    def _packed_weights(self, key: str, backend) -> list:
        """Weights packed once per backend (kept with the backend object they belong to)."""
        return self._prepared(key, backend)[0]

    def _prepared(self, key: str, backend) -> tuple:
        """(packed weights, the backend's fused kernels or None), once per backend;
        the last MAX_PREPARED backends are kept (least recently used dropped first)."""
        with self._lock:
            entry = self._packed.pop(key, ())
        if len(entry) != 3 or entry[0] is not backend:
            packed = [backend.pack_weights(s.w_codes, s.w_bits) for s in self.quant_stages]
            kernels = deploy_kernels(backend)
            if kernels is not None and not self._checked_chain():
                kernels = None
            entry = (backend, packed, kernels)
        with self._lock:
            self._packed[key] = entry
            while len(self._packed) > MAX_PREPARED:
                del self._packed[next(iter(self._packed))]
        return entry[1], entry[2]

    def _checked_chain(self) -> bool:
        """Whether every stage's parameters are valid and the codes reaching each quantized
        stage after the first are within its ``a_bits``: the clip bound ``2^out_bits - 1``
        of the producing stage, carried through the stages between like codes. False
        for a model with a stage the fused kernels do not run (``fusable``: the token
        stages of a Transformer)."""
        if not all(stage.fusable for stage in self.stages):
            return False
        try:
            bound, shape = None, self.input_shape
            for stage in self.stages:
                out_shape = stage.output_shape(shape)
                bound = stage.code_bound(bound, shape, out_shape)
                shape = out_shape
            return True
        except (TypeError, ValueError, IndexError):
            return False

    def forward(self, x, backend="ref") -> np.ndarray:
        """x: uint8 [B, *input_shape] pixel codes -> float32 logits [B, n_classes].

        Each stage's output is the next one's input: uint8 codes, or float32 tokens
        [B, T, D] between the stages of a Transformer.

        ``backend``: a name for :func:`soniq_ref.get_backend`, or a backend object
        (e.g. one pinned to a code path with ``variant``).
        """
        if not isinstance(x, np.ndarray) or x.dtype != np.uint8:
            raise TypeError("x must be a uint8 NumPy array of pixel codes")
        if x.ndim != 1 + len(self.input_shape) or x.shape[1:] != self.input_shape:
            raise ValueError(f"x must have shape [B, {', '.join(map(str, self.input_shape))}], "
                             f"got {x.shape}")
        impl = get_backend(backend) if isinstance(backend, str) else backend
        key = backend if isinstance(backend, str) else f"object-{id(backend)}"
        packed, kernels = self._prepared(key, impl)
        run, codes = BackendRun(impl, kernels, iter(packed)), x
        for stage in self.stages:
            codes = stage.run(codes, run)
            if stage.final:
                return codes
        raise ValueError("the deploy model has no final quantized stage")

    def logits(self, x, backend="ref", batch: int = 512) -> np.ndarray:
        """float32 logits [B, n_classes] of uint8 images ``x`` [B, *input_shape], in
        batches of ``batch`` (the same bits at any batch size and on every backend)."""
        if len(x) == 0:
            return np.zeros((0, self.n_classes), np.float32)
        return np.concatenate([_logits(self.forward(x[i:i + batch], backend))
                               for i in range(0, len(x), batch)])

    def predict(self, x, backend="ref", batch: int = 512) -> np.ndarray:
        """Class indices int64 [B] of uint8 images ``x`` [B, *input_shape]."""
        return self.logits(x, backend, batch).argmax(axis=1).astype(np.int64)

    def predict_proba(self, x, backend="ref", batch: int = 512) -> np.ndarray:
        """Class probabilities float64 [B, n_classes]: the softmax of the logits."""
        logits = self.logits(x, backend, batch).astype(np.float64)
        if len(logits) == 0:
            return logits
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def float32_bytes(self) -> int:
        """Bytes a float32 model of the same (folded) network needs: weights + biases."""
        return 4 * sum(s.float32_values() for s in self.stages)

    def mean_weight_bits(self) -> float:
        """Mean bits per weight, each weight counted once (0.0 without weights)."""
        weights = sum(int(s.w_codes.size) for s in self.quant_stages)
        return sum(s.weight_bits_total() for s in self.quant_stages) / weights if weights \
            else 0.0

    def describe(self) -> list[dict]:
        """Per stage: kind, output shape, and for quantized stages the bit allocation."""
        rows, shape = [], self.input_shape
        for stage in self.stages:
            out = stage.output_shape(shape)
            rows.append({"kind": stage.kind, "input_shape": list(shape),
                         "output_shape": list(out), **stage.describe()})
            shape = out
        return rows


def _logits(y: np.ndarray) -> np.ndarray:
    """``y`` if it is logits [B, n_classes]; a model whose last stage gives anything else
    (a convolution's [B, O, H, W]) has no class scores to compare with labels."""
    if y.ndim != 2:
        raise ValueError(f"the model's last stage gives {list(y.shape[1:])} per sample, not "
                         f"logits [n_classes]: it has no classifier")
    return y

