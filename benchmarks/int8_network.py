"""A deploy model's network as a uniform INT8 network, for the end-to-end baselines.

The ONNX Runtime QDQ baseline (:func:`qdq_model`) and the PyTorch fbgemm baseline
(:func:`fbgemm_model`) are built from one plan (:func:`int8_plan`), so both run the
same network with the same numbers. Each quantized stage of the deploy model becomes
an INT8 layer with per-output-channel weight scales:

    q      = 2 k - n                   the signed odd level of weight code k (n = 2^b - 1)
    q8     = q, or rint(q / 2) for the rows of 8-bit channels (|q| up to 255 > 127)
    w      = q8 * weight_scale[o]      weight_scale = scale[o] * (1 or 2) / in_scale
    y      = conv or matmul of (w, x) + bias[o]       (then ReLU, except the classifier)

with the deploy stage's float32 ``scale``/``bias`` (batch norm folded in). Activations
are uint8 with zero point 0 and one scale per tensor: ``1/255`` for the pixels, then
the step of one code on the next layer's A-bit grid (:func:`act_scale`). Max pooling
and flattening act on the quantized tensors, as in the deploy model.

Where the result is not the deploy model's: channels narrower than A bits are rounded
on the finer A-bit grid (a per-tensor scale cannot give each channel its own step),
8-bit weight rows lose their lowest bit, and the runtimes requantize in their own
operation order. The logits are therefore close to but not equal to soniq's; the
benchmarks measure how close.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class Int8Layer:
    """One quantized stage as an INT8 layer (see the module docstring).

    weight int8 [O, C, kh, kw] (conv) or [O, K] (linear); weight_scale, bias float32 [O];
    in_scale: float step of the uint8 input; out_scale: float step of the uint8 output,
    None for the classifier (float32 logits, no ReLU).
    """

    kind: str
    weight: np.ndarray
    weight_scale: np.ndarray
    bias: np.ndarray
    in_scale: float
    out_scale: float | None
    stride: int
    padding: int
    relu: bool = True           # False: conv2 and the projection of a residual block
    zero_point: int = 0         # of the uint8 output (128 for a residual branch's signed y)


@dataclass
class Int8Residual:
    """A residual block as INT8 layers: ``conv1`` (ReLU, requantized to conv2's input),
    ``conv2`` and the ``proj``ection (no ReLU, their signed outputs quantized at the
    block's ``out_scale`` around zero point 128), the identity skip read from the input
    tensor, one add, ReLU, and the block's output at ``out_scale``."""

    conv1: Int8Layer
    conv2: Int8Layer
    proj: Int8Layer | None
    out_scale: float


def act_scale(ratio: np.ndarray, bits: np.ndarray, act_bits_hi: int) -> float:
    """The float step of one code on the next layer's A-bit grid: code k of a b-bit channel
    sits at k << (A - b) and stands for about k / ratio, so the step is 2^(b - A) / ratio
    (= beta / 2^A, the same for every channel)."""
    return float(2.0 ** (int(bits[0]) - act_bits_hi) / float(ratio[0]))


def int8_weights(stage, in_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """(int8 weights shaped like ``stage.w_codes``, float32 per-channel scales [O])."""
    n = (1 << stage.w_bits.astype(np.int64)) - 1
    codes = stage.w_codes.reshape(stage.w_codes.shape[0], -1).astype(np.int64)
    q = 2 * codes - n[:, None]                                  # odd levels, |q| <= 255
    halve = (np.abs(q).max(axis=1) > 127).astype(np.int64)     # 8-bit rows: int8 range
    q8 = np.clip(np.rint(q / (1 + halve[:, None])), -127, 127).astype(np.int8)
    scale = (stage.scale.astype(np.float64) * (1 + halve) / in_scale).astype(np.float32)
    return q8.reshape(stage.w_codes.shape), scale


def int8_plan(deploy) -> list:
    """The deploy model's stages with every QuantStage replaced by an :class:`Int8Layer`
    and every ResidualStage by an :class:`Int8Residual` (PoolStage and FlattenStage kept
    as they are). ``avgpool_linear`` becomes a layer of that kind: ONNX Runtime's average
    divides by H * W, so its weight scales take back the ``1 / (H W)`` folded into
    ``scale``."""
    from soniq_ref.deploy import QuantStage
    from soniq_ref.stages.residual import ResidualStage

    quantized = [s for s in deploy.stages if isinstance(s, (QuantStage, ResidualStage))]
    plan, in_scale = [], 1 / 255
    for stage in deploy.stages:
        if not isinstance(stage, (QuantStage, ResidualStage)):
            plan.append(stage)
            continue
        reader = _next_reader(quantized, stage)
        out_scale = None if stage.final else \
            act_scale(stage.out_ratio, stage.out_bits, reader.act_bits_hi)
        if isinstance(stage, ResidualStage):
            if out_scale is None:
                raise ValueError("a residual block that ends the model has no INT8 form here")
            mid = act_scale(stage.conv1.out_ratio, stage.conv1.out_bits,
                            stage.conv2.act_bits_hi)
            branch = dict(relu=False, zero_point=128)
            plan.append(Int8Residual(
                _layer(stage.conv1, in_scale, mid), _layer(stage.conv2, mid, out_scale, **branch),
                None if stage.proj is None else _layer(stage.proj, in_scale, out_scale, **branch),
                out_scale))
        else:
            plan.append(_layer(stage, in_scale, out_scale))
        in_scale = out_scale
    return plan


def _next_reader(quantized: list, stage):
    """The quantized stage after ``stage`` (by identity), or None."""
    at = next(i for i, s in enumerate(quantized) if s is stage)
    return quantized[at + 1] if at + 1 < len(quantized) else None


def _layer(stage, in_scale: float, out_scale: float | None, **kind) -> Int8Layer:
    weight, weight_scale = int8_weights(stage, in_scale)
    if stage.kind == "avgpool_linear":
        weight_scale = (weight_scale * np.float32(stage.positions)).astype(np.float32)
    return Int8Layer(stage.kind, weight, weight_scale, stage.bias.astype(np.float32), in_scale,
                     out_scale, stage.stride, stage.padding, **kind)


def fbgemm_maps(deploy) -> bool:
    """Whether :func:`fbgemm_model` can build ``deploy`` (plain conv / linear stacks with
    pooling and flattening; not residual blocks or the pooled classifier)."""
    from soniq_ref.deploy import FlattenStage, PoolStage, QuantStage
    return all(isinstance(s, (PoolStage, FlattenStage)) or
               (isinstance(s, QuantStage) and s.kind in ("conv", "linear"))
               for s in deploy.stages)


def qdq_model(deploy, batch):
    """The plan as an ONNX QDQ graph (opset 13): uint8 pixels [batch, *input_shape] ->
    DequantizeLinear -> per layer [Conv or MatMul on DequantizeLinear'd int8 weights and
    int32 bias -> Relu -> QuantizeLinear/DequantizeLinear], MaxPool and Flatten between
    -> float32 logits. A residual block is conv1, conv2 and the projection so, the two
    branches added (``Add``, then ``Relu`` and Q/DQ); the pooled classifier is
    ``GlobalAveragePool`` (Q/DQ at its input's scale), ``Flatten`` and the MatMul. ONNX
    Runtime fuses the pattern into QLinearConv, QLinearAdd and integer matmuls.
    ``batch``: an int, or a name for a free batch dimension."""
    from onnx import TensorProto, helper, numpy_helper
    from soniq_ref.deploy import FlattenStage, PoolStage

    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(kind, inputs, out, **attrs):
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    def qdq(src, scale, tag, zero_point=0):
        s, z = const(f"{tag}_s", np.float32(scale)), const(f"{tag}_z", np.uint8(zero_point))
        return node("DequantizeLinear", [node("QuantizeLinear", [src, s, z], f"{tag}_q"), s, z],
                    f"{tag}_dq")

    def layer_nodes(layer, cur, i):
        """One Int8Layer on the dequantized tensor ``cur``; the name of its output."""
        ws = const(f"w{i}_s", layer.weight_scale)
        wz = const(f"w{i}_z", np.zeros(len(layer.weight_scale), np.int8))
        if layer.kind == "conv":
            w_dq = node("DequantizeLinear", [const(f"w{i}", layer.weight), ws, wz],
                        f"w{i}_dq", axis=0)
            b_step = (layer.in_scale * layer.weight_scale).astype(np.float32)
            bias_q = np.rint(layer.bias / b_step).astype(np.int32)
            b_dq = node("DequantizeLinear", [const(f"b{i}", bias_q), const(f"b{i}_s", b_step),
                                             const(f"b{i}_z", np.zeros(len(bias_q), np.int32))],
                        f"b{i}_dq", axis=0)
            y = node("Conv", [cur, w_dq, b_dq], f"y{i}", pads=[layer.padding] * 4,
                     strides=[layer.stride] * 2)
        else:
            if layer.kind == "avgpool_linear":
                pooled = node("GlobalAveragePool", [cur], f"gap{i}")
                cur = node("Flatten", [qdq(pooled, layer.in_scale, f"gap{i}")], f"gapflat{i}",
                           axis=1)
            w_dq = node("DequantizeLinear", [const(f"w{i}", np.ascontiguousarray(layer.weight.T)),
                                             ws, wz], f"w{i}_dq", axis=1)
            y = node("Add", [node("MatMul", [cur, w_dq], f"mm{i}"),
                             const(f"bias{i}", layer.bias)], f"y{i}")
        if layer.out_scale is None:
            return y
        if layer.relu:
            y = node("Relu", [y], f"relu{i}")
        return qdq(y, layer.out_scale, f"act{i}", layer.zero_point)

    cur = node("DequantizeLinear", ["x", const("x_s", np.float32(1 / 255)),
                                    const("x_z", np.uint8(0))], "x_dq")
    s_act = 1 / 255
    for i, layer in enumerate(int8_plan(deploy)):
        if isinstance(layer, PoolStage):
            pooled = node("MaxPool", [cur], f"pool{i}", kernel_shape=[layer.kernel] * 2,
                          strides=[layer.stride] * 2)
            cur = qdq(pooled, s_act, f"pool{i}")
        elif isinstance(layer, FlattenStage):
            cur = node("Flatten", [cur], f"flat{i}", axis=1)
        elif isinstance(layer, Int8Residual):
            y = layer_nodes(layer.conv2, layer_nodes(layer.conv1, cur, f"{i}a"), f"{i}b")
            skip = cur if layer.proj is None else layer_nodes(layer.proj, cur, f"{i}p")
            added = node("Relu", [node("Add", [y, skip], f"add{i}")], f"addrelu{i}")
            s_act = layer.out_scale
            cur = qdq(added, s_act, f"out{i}")
        else:
            cur = layer_nodes(layer, cur, i)
            s_act = layer.out_scale
    nodes.append(helper.make_node("Identity", [cur], ["logits"]))
    shape = [batch] + list(deploy.input_shape)
    graph = helper.make_graph(
        nodes, "deploy_qdq", [helper.make_tensor_value_info("x", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def fbgemm_model(deploy, logits: np.ndarray):
    """The plan as PyTorch quantized modules on the fbgemm engine; returns a callable
    uint8 pixels [B, *input_shape] (NumPy) -> float32 logits [B, n_classes] (NumPy).

    Conv layers are ``ConvReLU2d`` and hidden linear layers ``LinearReLU`` (quint8
    activations, per-channel qint8 weights); the classifier is a quantized ``Linear``
    whose output scale and zero point cover the range of ``logits`` (sample logits, as
    a calibration pass would give), dequantized at the end. The pixels enter as a
    quint8 tensor over the uint8 array (no float conversion). Sets
    ``torch.backends.quantized.engine = "fbgemm"``."""
    import torch
    from torch.ao.nn.intrinsic.quantized import ConvReLU2d, LinearReLU
    from torch.ao.nn.quantized import Linear
    from soniq_ref.deploy import PoolStage

    torch.backends.quantized.engine = "fbgemm"
    lo, hi = min(float(logits.min()), 0.0), max(float(logits.max()), 0.0)
    logit_scale = max(hi - lo, 1e-6) / 255
    logit_zero = int(np.clip(np.rint(-lo / logit_scale), 0, 255))
    steps = []
    for layer in int8_plan(deploy):
        if isinstance(layer, PoolStage):
            steps.append(lambda t, k=layer.kernel, s=layer.stride:
                         torch.nn.functional.max_pool2d(t, k, s))
            continue
        if not hasattr(layer, "weight"):                     # FlattenStage
            steps.append(lambda t: t.reshape(t.shape[0], -1))
            continue
        with warnings.catch_warnings():     # quantized tensors are deprecated, still fbgemm's
            warnings.simplefilter("ignore", UserWarning)
            weight = torch.quantize_per_channel(
                torch.from_numpy(layer.weight.astype(np.float32) * layer.weight_scale.reshape(
                    (-1,) + (1,) * (layer.weight.ndim - 1))),
                torch.from_numpy(layer.weight_scale.astype(np.float64)),
                torch.zeros(len(layer.weight_scale), dtype=torch.int64), 0, torch.qint8)
        if layer.kind == "conv":
            o, c, kh, _ = layer.weight.shape
            module = ConvReLU2d(c, o, kh, stride=layer.stride, padding=layer.padding)
        else:
            o, k = layer.weight.shape
            module = Linear(k, o) if layer.out_scale is None else LinearReLU(k, o)
        module.set_weight_bias(weight, torch.from_numpy(layer.bias.copy()))
        module.scale, module.zero_point = (
            (logit_scale, logit_zero) if layer.out_scale is None else (layer.out_scale, 0))
        steps.append(module)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            t = torch._make_per_tensor_quantized_tensor(torch.from_numpy(x), 1 / 255, 0)
            for step in steps:
                t = step(t)
            return t.dequantize().numpy()

    return forward
