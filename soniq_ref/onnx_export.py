"""A deploy model as a standard ONNX graph of integer operators (opset 13).

Input ``pixels``: uint8 ``[B, *input_shape]``; output ``logits``: float32
``[B, n_classes]``. Every value between layers is a uint8 tensor of *shifted*
activation codes ``a' = k << (A - bits)`` (the grid of :mod:`soniq_ref.integer_core`),
so each quantized stage is, exactly as in the reference::

    P   = ConvInteger(a', k_w)            or MatMulInteger(a', k_w^T)   int32
    S   = ConvInteger(a', ones)           or MatMulInteger(a', ones)    int32 (sum of a')
    acc = 2 * P - (2^bw[o] - 1) * S                                       int32, exact
    y   = scale[o] * float32(acc) + bias[o]                               float32

with the uint8 weight codes ``k_w`` (the signed level ``q = 2k - n`` never has to fit
a signed 8-bit type, so 8-bit weights export too). A stage that feeds another ends
with that stage's codes, ``Cast<uint8>(min(max(Round(y * ratio), 0), 2^bits - 1) *
2^(A_next - bits))``; ONNX's ``Round`` rounds half to even, like the reference.
Max pooling and flattening act on the codes, as in :class:`~soniq_ref.deploy.DeployModel`.
The accumulator needs ``K <= 33025`` to fit int32 (the same bound as the kernels').

Needs the ``onnx`` package (``pip install onnx``), imported only here.
"""

from __future__ import annotations

import numpy as np

from .atomic import atomic_write_bytes
from .contract import INT32_EXACT_K
from .deploy import FlattenStage, PoolStage, QuantStage, stage_output_shape

OPSET = 13
MAX_K = INT32_EXACT_K


class _Graph:
    """Nodes and initializers under construction, with unique names."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, value: np.ndarray) -> str:
        name = f"{name}_{self.count}"
        self.count += 1
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, inputs: list, **attrs) -> str:
        out = f"{kind.lower()}_{self.count}"
        self.count += 1
        self.nodes.append(self.helper.make_node(kind, inputs, [out], **attrs))
        return out


def _per_channel(values: np.ndarray, ndim: int) -> np.ndarray:
    """[O] -> [1, O] (linear) or [1, O, 1, 1] (conv), for broadcasting."""
    return values.reshape((1, -1) + (1,) * (ndim - 2))


def _accumulate(g: _Graph, stage: QuantStage, codes: str) -> str:
    """int32 ``acc = 2 * sum(k * a') - n * sum(a')`` of one stage."""
    if stage.kind == "conv":
        _, c, kh, kw = stage.w_codes.shape
        conv = dict(pads=[stage.padding] * 4, strides=[stage.stride] * 2)
        p = g.op("ConvInteger", [codes, g.const("weight_codes", stage.w_codes)], **conv)
        s = g.op("ConvInteger", [codes, g.const("ones", np.ones((1, c, kh, kw), np.uint8))],
                 **conv)
    else:
        k = stage.w_codes.shape[1]
        p = g.op("MatMulInteger", [codes, g.const("weight_codes", stage.w_codes.T)])
        s = g.op("MatMulInteger", [codes, g.const("ones", np.ones((k, 1), np.uint8))])
    ndim = 4 if stage.kind == "conv" else 2
    n = _per_channel(((1 << stage.w_bits.astype(np.int64)) - 1).astype(np.int32), ndim)
    twice = g.op("Mul", [p, g.const("two", np.array(2, np.int32))])
    return g.op("Sub", [twice, g.op("Mul", [s, g.const("levels", n)])])


def _requantize(g: _Graph, stage: QuantStage, y: str, out_shape: tuple, next_hi: int) -> str:
    """uint8 shifted codes of the next stage from float32 ``y``."""
    if stage.per_feature:
        shape = (1,) + tuple(out_shape)
        bits, ratio = stage.out_bits.reshape(shape), stage.out_ratio.reshape(shape)
    else:
        ndim = 1 + len(out_shape)
        bits, ratio = (_per_channel(stage.out_bits, ndim), _per_channel(stage.out_ratio, ndim))
    top = ((1 << bits.astype(np.int64)) - 1).astype(np.float32)
    shift = (1 << (next_hi - bits.astype(np.int64))).astype(np.float32)
    t = g.op("Round", [g.op("Mul", [y, g.const("ratio", ratio.astype(np.float32))])])
    t = g.op("Min", [g.op("Max", [t, g.const("zero", np.array(0, np.float32))]),
                     g.const("top", top)])
    return g.op("Cast", [g.op("Mul", [t, g.const("shift", shift)])], to=2)   # 2: uint8


def _quant_stage(g: _Graph, stage, codes: str, out_shape: tuple, next_hi) -> str:
    k = int(np.prod(stage.w_codes.shape[1:]))
    if k > MAX_K:
        raise ValueError(f"a layer with K = {k} > {MAX_K} inputs per output does not fit the "
                         f"int32 accumulator of ONNX's integer operators")
    ndim = 4 if stage.kind == "conv" else 2
    acc = g.op("Cast", [_accumulate(g, stage, codes)], to=1)                 # 1: float32
    y = g.op("Add", [g.op("Mul", [acc, g.const("scale", _per_channel(stage.scale, ndim))]),
                     g.const("bias", _per_channel(stage.bias, ndim))])
    return y if next_hi is None else _requantize(g, stage, y, out_shape, next_hi)


ONNX_KINDS = ("conv", "linear", "maxpool", "flatten")     # the stage types exported


def to_onnx(model):
    """The ``onnx.ModelProto`` of a :class:`~soniq_ref.deploy.DeployModel`."""
    from onnx import TensorProto, checker, helper

    unsupported = sorted({s.kind for s in model.stages if s.kind not in ONNX_KINDS})
    if unsupported:
        raise ValueError(f"the ONNX export does not cover {', '.join(unsupported)} stages "
                         f"(it covers {', '.join(ONNX_KINDS)})")
    g = _Graph()
    his = [s.act_bits_hi for s in model.stages if isinstance(s, QuantStage)]
    codes, shape, seen = "pixels", model.input_shape, 0
    for stage in model.stages:
        out_shape = stage_output_shape(stage, shape)
        if isinstance(stage, FlattenStage):
            codes = g.op("Flatten", [codes], axis=1)
        elif isinstance(stage, PoolStage):
            codes = g.op("MaxPool", [codes], kernel_shape=[stage.kernel] * 2,
                         strides=[stage.stride] * 2)
        else:
            seen += 1
            codes = _quant_stage(g, stage, codes, out_shape,
                                 his[seen] if seen < len(his) else None)
        shape = out_shape
    g.nodes.append(helper.make_node("Identity", [codes], ["logits"]))
    graph = helper.make_graph(
        g.nodes, "soniq", [helper.make_tensor_value_info("pixels", TensorProto.UINT8,
                                                         ["batch", *model.input_shape])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", *shape])],
        initializer=g.inits)
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="soniq")
    onnx_model.ir_version = 8           # readable by every ONNX Runtime that has opset 13
    checker.check_model(onnx_model)
    return onnx_model


def save_onnx(model, path) -> int:
    """Write ``model`` as an ONNX file atomically; returns its size in bytes."""
    data = to_onnx(model).SerializeToString()
    atomic_write_bytes(path, data)
    return len(data)
