"""The deployable integer model: uint8 pixels in, float32 logits out.

A trained :class:`~soniq_ref.models.Sequential` (quantized layers in exact mode,
bits fixed) becomes a list of stages:

``QuantStage``   one quantized layer. Its integer accumulator (``linear_int`` /
                 ``conv2d_int``) goes through one fused per-channel step::

                     y = scale[o] * float32(acc) + bias[o]
                     scale = a_bn[o] * w_step[o] * s_a          (float32)
                     bias  = a_bn[o] * bias_layer[o] + b_bn[o]  (float32)

                 with the following batch norm folded in (``a_bn``, ``b_bn``: its
                 eval-mode affine map; 1 and 0 when there is none). The last
                 stage emits ``y`` as float32 logits (``epilogue``); every other
                 stage emits the next layer's input codes
                 ``clip(rint(y * out_ratio), 0, 2**out_bits - 1)`` (``requantize``;
                 the clip at 0 is the ReLU).
``PoolStage``    max pooling on the uint8 codes (it commutes with the monotone
                 quantizer, so pooling codes equals quantizing pooled values).
``FlattenStage`` [B, C, H, W] codes -> [B, C*H*W].

When a convolution feeds a linear layer through Flatten, the linear layer's
input precision is per *feature* (channel, row, column), not per channel. The
convolution's requantization then runs on its accumulator viewed as
``[B, O*H*W]`` with ``scale``/``bias`` repeated per position and
``out_bits``/``out_ratio`` given per position (each pre-pool position takes the
precision of the pooled feature its window produces; pooling must then be
non-overlapping).

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
from dataclasses import dataclass

import numpy as np

from . import checks
from .backend import get_backend
from .contract import deploy_kernels
from .layers import QuantConv2d, QuantLayer
from .layers.activations import ReLU
from .layers.batchnorm import BatchNorm
from .layers.flatten import Flatten
from .layers.pooling import MaxPool2d, max_pool_codes, pool_output_size
from .integer_core import conv_output_size


@dataclass
class QuantStage:
    """One quantized layer, ready for the integer core (see the module docstring).

    w_codes uint8 [O, K] or [O, C, kh, kw]; w_bits uint8 [O]; a_bits uint8 [C or K];
    scale, bias float32 [O]; out_bits uint8 / out_ratio float32, [O] (per channel) or
    [O*H*W] (per feature, ``per_feature``), or None for the last stage.
    """

    kind: str                    # "linear" or "conv"
    w_codes: np.ndarray
    w_bits: np.ndarray
    a_bits: np.ndarray
    act_bits_hi: int
    weight_palette: tuple
    act_palette: tuple
    stride: int
    padding: int
    scale: np.ndarray
    bias: np.ndarray
    out_bits: np.ndarray | None = None
    out_ratio: np.ndarray | None = None
    per_feature: bool = False

    @property
    def out_channels(self) -> int:
        return int(self.w_codes.shape[0])


@dataclass
class PoolStage:
    kernel: int
    stride: int


@dataclass
class FlattenStage:
    pass


MAX_GEOMETRY = checks.MAX_GEOMETRY


def check_size(shape, where: str) -> int:
    """The element count of ``shape`` in Python integers (no wrap), at most MAX_GEOMETRY."""
    size = 1
    for dim in shape:
        size *= int(dim)
    if size > MAX_GEOMETRY:
        raise ValueError(f"{where}: {list(shape)} has {size} elements per sample, more than "
                         f"the {MAX_GEOMETRY} any backend runs")
    return size


def stage_output_shape(stage, shape: tuple) -> tuple:
    """Per-sample output shape of ``stage`` for per-sample input ``shape`` (Python ints)."""
    shape = tuple(int(v) for v in shape)
    if isinstance(stage, FlattenStage):
        return (check_size(shape, "flatten input"),)
    if isinstance(stage, PoolStage):
        c, h, w = shape
        return (c, pool_output_size(h, stage.kernel, stage.stride),
                pool_output_size(w, stage.kernel, stage.stride))
    if stage.kind == "linear":
        return (stage.out_channels,)
    _, _, kh, kw = stage.w_codes.shape
    return (stage.out_channels,
            conv_output_size(shape[1], kh, stage.stride, stage.padding),
            conv_output_size(shape[2], kw, stage.stride, stage.padding))


def _new_stage(layer: QuantLayer) -> QuantStage:
    codes, w_bits, w_step = layer.quantized_weights()
    s_a = np.float64(layer.act_step())
    conv = isinstance(layer, QuantConv2d)
    return QuantStage(
        kind="conv" if conv else "linear", w_codes=codes.copy(), w_bits=w_bits.copy(),
        a_bits=np.asarray(layer.a_bits, np.uint8).copy(), act_bits_hi=int(layer.act_bits_hi),
        weight_palette=tuple(layer.weight_palette), act_palette=tuple(layer.act_palette),
        stride=int(layer.stride) if conv else 1, padding=int(layer.padding) if conv else 0,
        scale=(w_step.astype(np.float64) * s_a).astype(np.float32),
        bias=layer.params["bias"].astype(np.float32).copy())


def _fold_bn(stage: QuantStage, bn: BatchNorm) -> None:
    a, b = bn.folded()
    stage.scale = (a * stage.scale.astype(np.float64)).astype(np.float32)
    stage.bias = (a * stage.bias.astype(np.float64) + b).astype(np.float32)


def _upsample(values: np.ndarray, pools: list, out_hw: tuple) -> np.ndarray:
    """Per-feature values [C, Hp, Wp] -> [C, H, W] at the producing layer's resolution."""
    for kernel, stride in reversed(pools):
        if kernel != stride:
            raise ValueError("per-feature precision through overlapping pooling is not "
                             "supported (use stride == kernel)")
        values = values.repeat(kernel, axis=1).repeat(kernel, axis=2)
    h, w = out_hw
    values = values[:, :h, :w]
    pad = ((0, 0), (0, h - values.shape[1]), (0, w - values.shape[2]))
    return np.pad(values, pad, mode="edge")   # positions no window reads


def _link(stage: QuantStage, nxt: QuantLayer, shape: tuple, pools: list, flattened: bool):
    """Give ``stage`` the requantization producing ``nxt``'s input codes."""
    bits, ratio = np.asarray(nxt.a_bits, np.uint8), nxt.act_ratio().astype(np.float32)
    if not (flattened and len(shape) == 3):
        stage.out_bits, stage.out_ratio = bits.copy(), ratio.copy()
        return
    o, h, w = shape
    pooled = (o, h, w)
    for kernel, stride in pools:
        pooled = (o, pool_output_size(pooled[1], kernel, stride),
                  pool_output_size(pooled[2], kernel, stride))
    stage.out_bits = _upsample(bits.reshape(pooled), pools, (h, w)).reshape(-1).copy()
    stage.out_ratio = _upsample(ratio.reshape(pooled), pools, (h, w)).reshape(-1).copy()
    stage.per_feature = True


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
        return [s for s in self.stages if isinstance(s, QuantStage)]

    @property
    def n_classes(self) -> int:
        return self.quant_stages[-1].out_channels

    @classmethod
    def from_model(cls, model, input_shape) -> "DeployModel":
        """Export a trained model whose quantized layers have fixed bits.

        Supported pattern: ``QuantLayer [BatchNorm] [ReLU] {MaxPool2d | Flatten} ...``,
        ending with a QuantLayer (the classifier).
        """
        stages, shape = [], tuple(int(v) for v in input_shape)
        current, out_shape, pools, flattened = None, None, [], False
        for layer in model.layers:
            if isinstance(layer, QuantLayer):
                if layer.w_bits is None:
                    raise ValueError("every quantized layer needs fixed bits before export")
                if current is not None:
                    _link(current, layer, out_shape, pools, flattened)
                current = _new_stage(layer)
                stages.append(current)
                pools, flattened = [], False
                shape = out_shape = stage_output_shape(current, shape)
            elif isinstance(layer, BatchNorm):
                if current is None or pools or flattened:
                    raise ValueError("batch norm must directly follow a quantized layer "
                                     "to be folded into its epilogue")
                _fold_bn(current, layer)
            elif isinstance(layer, (MaxPool2d, Flatten)):
                stage = (PoolStage(layer.kernel, layer.stride) if isinstance(layer, MaxPool2d)
                         else FlattenStage())
                if isinstance(stage, PoolStage):
                    pools.append((stage.kernel, stage.stride))
                else:
                    flattened = True
                stages.append(stage)
                shape = stage_output_shape(stage, shape)
            elif not isinstance(layer, ReLU):
                raise ValueError(f"cannot export layer {type(layer).__name__}")
        if not stages or stages[-1] is not current or current.kind != "linear":
            raise ValueError("the model must end with a quantized linear layer (the "
                             "classifier, logits [B, n_classes])")
        return cls(input_shape, stages)

    def _packed_weights(self, key: str, backend) -> list:
        """Weights packed once per backend (kept with the backend object they belong to)."""
        return self._prepared(key, backend)[0]

    def _prepared(self, key: str, backend) -> tuple:
        """(packed weights, the backend's unchecked kernels or None), once per backend;
        the last MAX_PREPARED backends are kept (least recently used dropped first)."""
        with self._lock:
            entry = self._packed.pop(key, ())
        if len(entry) != 3 or entry[0] is not backend:
            packed = [backend.pack_weights(s.w_codes, s.w_bits) for s in self.quant_stages]
            trusted = deploy_kernels(backend)
            if trusted is not None and not self._checked_chain():
                trusted = None
            entry = (backend, packed, trusted)
        with self._lock:
            self._packed[key] = entry
            while len(self._packed) > MAX_PREPARED:
                del self._packed[next(iter(self._packed))]
        return entry[1], entry[2]

    def _checked_chain(self) -> bool:
        """Whether every stage's parameters are valid and the codes reaching each quantized
        stage after the first are within its ``a_bits``: the clip bound ``2^out_bits - 1``
        of the producing stage, carried through pooling (a max) and flattening like codes."""
        try:
            bound, shape = None, self.input_shape
            for stage in self.stages:
                out_shape = stage_output_shape(stage, shape)
                if isinstance(stage, FlattenStage):
                    bound = None if bound is None else bound.reshape(-1)
                elif isinstance(stage, PoolStage):
                    bound = None if bound is None else \
                        max_pool_codes(bound[None], stage.kernel, stage.stride)[0]
                else:
                    hi = checks.check_bits_value("act_bits_hi", stage.act_bits_hi)
                    a_bits = checks.check_bits("a_bits", stage.a_bits, shape[0], hi=hi)
                    if stage.w_codes.ndim != (2 if stage.kind == "linear" else 4) \
                            or stage.w_codes.ndim != len(shape) + 1 \
                            or stage.w_codes.shape[1] != shape[0]:
                        return False
                    if bound is not None:   # codes produced by the previous stage
                        checks.check_codes("codes", bound[None], a_bits, axis=1)
                    bound = _out_bound(stage, out_shape)
                shape = out_shape
            return True
        except (TypeError, ValueError, IndexError):
            return False

    def forward(self, x, backend="ref") -> np.ndarray:
        """x: uint8 [B, *input_shape] pixel codes -> float32 logits [B, n_classes].

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
        packed, trusted = self._prepared(key, impl)
        packed = iter(packed)
        pool = getattr(trusted or impl, "max_pool_codes", max_pool_codes)
        codes, first = x, True
        for stage in self.stages:
            if isinstance(stage, FlattenStage):
                codes = checks.rows(codes)
            elif isinstance(stage, PoolStage):
                codes = pool(codes, stage.kernel, stage.stride)
            elif trusted is not None:
                if first and stage.a_bits.min() < 8:   # (8-bit codes: any uint8 is valid)
                    checks.check_codes("x_codes" if stage.kind == "conv" else "a_codes",
                                       codes, stage.a_bits, axis=1)
                first = False   # every later stage sees codes the model produced
                if stage.out_bits is None:
                    acc = self._accumulate(trusted, stage, next(packed), codes)
                    return trusted.epilogue(acc, stage.scale, stage.bias)
                codes = self._fused(trusted, stage, next(packed), codes)
            else:
                acc = self._accumulate(impl, stage, next(packed), codes)
                if stage.out_bits is None:
                    return impl.epilogue(acc, stage.scale, stage.bias)
                codes = self._requantize(impl, stage, acc)
        raise ValueError("the deploy model has no final quantized stage")

    @staticmethod
    def _fused(trusted, stage, packed, codes):
        """The stage's next codes from ``trusted``'s GEMM with requantize fused in."""
        if stage.kind == "linear":
            return trusted.linear_requantize(codes, stage.a_bits, packed, stage.act_bits_hi,
                                             stage.scale, stage.bias, stage.out_bits,
                                             stage.out_ratio)
        return trusted.conv2d_requantize(codes, stage.a_bits, packed, stage.act_bits_hi,
                                         stage.stride, stage.padding, stage.scale, stage.bias,
                                         stage.out_bits, stage.out_ratio)

    @staticmethod
    def _accumulate(impl, stage, packed, codes):
        if stage.kind == "linear":
            return impl.linear_int(codes, stage.a_bits, packed, stage.w_bits, stage.act_bits_hi)
        return impl.conv2d_int(codes, stage.a_bits, packed, stage.w_bits, stage.act_bits_hi,
                               stride=stage.stride, padding=stage.padding)

    @staticmethod
    def _requantize(impl, stage, acc):
        if not stage.per_feature:
            return impl.requantize(acc, stage.scale, stage.bias, stage.out_bits, stage.out_ratio)
        positions = int(np.prod(acc.shape[2:]))
        flat = impl.requantize(checks.rows(acc), np.repeat(stage.scale, positions),
                               np.repeat(stage.bias, positions), stage.out_bits, stage.out_ratio)
        return flat.reshape(acc.shape)

    def predict(self, x, backend="ref", batch: int = 512) -> np.ndarray:
        """Class indices int64 [B] of uint8 images ``x`` [B, *input_shape]."""
        if len(x) == 0:
            return np.zeros(0, np.int64)
        return np.concatenate([_logits(self.forward(x[i:i + batch], backend)).argmax(axis=1)
                               for i in range(0, len(x), batch)])

    def predict_proba(self, x, backend="ref", batch: int = 512) -> np.ndarray:
        """Class probabilities float64 [B, n_classes]: the softmax of the logits."""
        if len(x) == 0:
            return np.zeros((0, self.n_classes))
        logits = np.concatenate([self.forward(x[i:i + batch], backend)
                                 for i in range(0, len(x), batch)]).astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def float32_bytes(self) -> int:
        """Bytes a float32 model of the same (folded) network needs: weights + biases."""
        return 4 * sum(s.w_codes.size + s.bias.size for s in self.quant_stages)

    def describe(self) -> list[dict]:
        """Per stage: kind, output shape, and for quantized stages the bit allocation."""
        rows, shape = [], self.input_shape
        for stage in self.stages:
            out = stage_output_shape(stage, shape)
            row = {"kind": "flatten" if isinstance(stage, FlattenStage) else
                   "maxpool" if isinstance(stage, PoolStage) else stage.kind,
                   "input_shape": list(shape), "output_shape": list(out)}
            if isinstance(stage, QuantStage):
                row.update(weight_shape=list(stage.w_codes.shape),
                           weight_bits=_histogram(stage.w_bits),
                           input_bits=_histogram(stage.a_bits),
                           mean_weight_bits=float(stage.w_bits.mean()))
            rows.append(row)
            shape = out
        return rows


def _out_bound(stage: QuantStage, out_shape: tuple):
    """Checked parameters of ``stage``; the largest code it emits per output element (uint8,
    per-sample ``out_shape``), or None for the last stage."""
    o = stage.out_channels
    checks.check_float32("scale", stage.scale, o)
    checks.check_float32("bias", stage.bias, o)
    if stage.out_bits is None:
        return None
    length = int(np.prod(out_shape)) if stage.per_feature else o
    bits = checks.check_bits("out_bits", stage.out_bits, length)
    ratio = checks.check_float32("out_ratio", stage.out_ratio, length)
    if np.any(ratio <= 0):
        raise ValueError("out_ratio must be > 0")
    top = ((1 << bits.astype(np.int64)) - 1).astype(np.uint8)
    if stage.per_feature:
        return top.reshape(out_shape)
    return np.ascontiguousarray(np.broadcast_to(top.reshape((o,) + (1,) * (len(out_shape) - 1)),
                                                out_shape))


def _logits(y: np.ndarray) -> np.ndarray:
    """``y`` if it is logits [B, n_classes]; a model whose last stage gives anything else
    (a convolution's [B, O, H, W]) has no class scores to compare with labels."""
    if y.ndim != 2:
        raise ValueError(f"the model's last stage gives {list(y.shape[1:])} per sample, not "
                         f"logits [n_classes]: it has no classifier")
    return y


def _histogram(bits: np.ndarray) -> dict:
    values, counts = np.unique(bits, return_counts=True)
    return {int(v): int(c) for v, c in zip(values, counts)}
