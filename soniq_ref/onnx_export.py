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
A residual block adds its float32 skip (the projection's ``y``, or ``s_a * float32(a')``)
to conv2's ``y`` with one ``Add`` before requantizing; the pooled classifier sums its
per-position int32 accumulators with ``ReduceSum`` before the epilogue.
The accumulator needs ``K <= 33025`` to fit int32 (the same bound as the kernels').

Each stage type emits its own nodes (``to_onnx`` of :class:`soniq_ref.stages.base.Stage`,
given an :class:`OnnxGraph`); this module walks the stages and wraps the graph.

Needs the ``onnx`` package (``pip install onnx``), imported only here.
"""

from __future__ import annotations

import numpy as np

from .atomic import atomic_write_bytes
from .contract import INT32_EXACT_K
from .deploy import stage_output_shape

OPSET = 13
MAX_K = INT32_EXACT_K


class OnnxGraph:
    """Nodes and initializers under construction, with unique names: what a stage's
    ``to_onnx`` adds its part to."""

    def __init__(self):
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer holding ``value``; returns its unique name."""
        name = f"{name}_{self.count}"
        self.count += 1
        self.inits.append(self.numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, inputs: list, **attrs) -> str:
        """Add one node of operator ``kind``; returns the name of its output."""
        out = f"{kind.lower()}_{self.count}"
        self.count += 1
        self.nodes.append(self.helper.make_node(kind, inputs, [out], **attrs))
        return out


def next_grids(stages) -> list:
    """Per stage, the grid ``A`` of the shifted codes it hands on: the ``A`` of the next
    stage that reads codes on a grid of its own (``Stage.onnx_input_hi``); None for
    the stages after the last such stage (they hand on float32 values)."""
    grids, hi = [], None
    for stage in reversed(stages):
        grids.append(hi)
        hi = stage.onnx_input_hi(hi)
    return grids[::-1]


def to_onnx(model):
    """The ``onnx.ModelProto`` of a :class:`~soniq_ref.deploy.DeployModel`; ValueError
    for a model with a stage that has no ONNX form (a Vision Transformer's)."""
    from .stages.base import Stage

    for stage in model.stages:
        if type(stage).to_onnx is Stage.to_onnx:
            raise ValueError(f"a {stage.kind} stage has no ONNX form: only convolutional and "
                             f"fully connected models export to ONNX")
    from onnx import TensorProto, checker, helper

    g = OnnxGraph()
    codes, shape = "pixels", model.input_shape
    for stage, next_hi in zip(model.stages, next_grids(model.stages)):
        out_shape = stage_output_shape(stage, shape)
        codes = stage.to_onnx(g, codes, out_shape, next_hi)
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
