"""End to end: the digits CNN deploy model on ``cpu`` against ONNX Runtime on an INT8 QDQ model.

It trains the default digits CNN briefly (the timing does not depend on how well it is
trained), exports it as a DeployModel, and builds the same network as an ONNX QDQ model:
uint8 pixels -> DequantizeLinear -> [Conv (int8 weights, per-channel scales, int32 bias) ->
Relu -> QuantizeLinear/DequantizeLinear -> MaxPool -> Q/DQ] x 2 -> Flatten -> MatMul
(int8 weights) -> Add -> float32 logits, which ONNX Runtime fuses into QLinearConv and
integer matmuls. Activations use one uint8 scale per tensor (the A-bit grid of the
layer's activation palette); low-bit channels are therefore not rounded exactly like
the deploy model, so logits differ slightly -- the script prints how often the two
agree on the predicted class. Both run on a batch of 256 test images, single-threaded
and with all threads; medians over repeats; ratio = ORT time / soniq time. ``--stages``
adds the single-threaded time of each stage of the soniq forward pass (as the forward pass
runs it: unchecked entries, requantize fused into the GEMM, pooling in C).

Usage:  python benchmarks/deploy_cnn.py [--json out.json] [--epochs 2] [--clock thread]
                                        [--stages]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# the packages of this checkout, not an installed copy
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from baselines import (CLOCKS, _session, clock_for, machine, markdown_table,  # noqa: E402
                       median_seconds, paired_median_seconds, write_json)

BATCH = 256


def act_scale(ratio: np.ndarray, bits: np.ndarray, act_bits_hi: int) -> float:
    """The float step of one code on the next layer's A-bit grid: code k of a b-bit channel
    sits at k << (A - b) and stands for about k / ratio, so the step is 2^(b - A) / ratio
    (= beta / 2^A, the same for every channel)."""
    return float(2.0 ** (int(bits[0]) - act_bits_hi) / float(ratio[0]))


def qdq_model(deploy):
    """The deploy model's network as an ONNX QDQ graph (see the module docstring)."""
    from onnx import TensorProto, helper, numpy_helper
    from soniq_ref.deploy import FlattenStage, PoolStage

    nodes, inits = [], []

    def const(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def qdq(src, scale, tag):
        s, z = const(f"{tag}_s", np.float32(scale)), const(f"{tag}_z", np.uint8(0))
        nodes.append(helper.make_node("QuantizeLinear", [src, s, z], [f"{tag}_q"]))
        nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_q", s, z], [f"{tag}_dq"]))
        return f"{tag}_dq"

    nodes.append(helper.make_node("DequantizeLinear", ["x", const("x_s", np.float32(1 / 255)),
                                                       const("x_z", np.uint8(0))], ["x_dq"]))
    cur, s_act = "x_dq", 1 / 255
    quant = deploy.quant_stages
    q_index = 0
    for i, stage in enumerate(deploy.stages):
        if isinstance(stage, PoolStage):
            nodes.append(helper.make_node("MaxPool", [cur], [f"pool{i}"],
                                          kernel_shape=[stage.kernel] * 2,
                                          strides=[stage.stride] * 2))
            cur = qdq(f"pool{i}", s_act, f"pool{i}")
            continue
        if isinstance(stage, FlattenStage):
            nodes.append(helper.make_node("Flatten", [cur], [f"flat{i}"], axis=1))
            cur = f"flat{i}"
            continue
        q_index += 1
        n = (1 << stage.w_bits.astype(np.int64)) - 1
        codes = stage.w_codes.reshape(stage.w_codes.shape[0], -1).astype(np.int64)
        q = 2 * codes - n[:, None]                                 # odd levels, |q| <= 255
        halve = (np.abs(q).max(axis=1) > 127).astype(np.int64)    # 8-bit rows: int8 range
        q8 = np.clip(np.rint(q / (1 + halve[:, None])), -127, 127).astype(np.int8)
        w_scale = (stage.scale.astype(np.float64) * (1 + halve) / s_act).astype(np.float32)
        bias_q = np.rint(stage.bias / (s_act * w_scale)).astype(np.int32)
        ws, wz = const(f"w{i}_s", w_scale), const(f"w{i}_z", np.zeros(len(w_scale), np.int8))
        b_scale = const(f"b{i}_s", (s_act * w_scale).astype(np.float32))
        bz = const(f"b{i}_z", np.zeros(len(w_scale), np.int32))
        if stage.kind == "conv":
            w = const(f"w{i}", q8.reshape(stage.w_codes.shape))
            nodes.append(helper.make_node("DequantizeLinear", [w, ws, wz], [f"w{i}_dq"], axis=0))
            nodes.append(helper.make_node("DequantizeLinear", [const(f"b{i}", bias_q), b_scale,
                                                               bz], [f"b{i}_dq"], axis=0))
            nodes.append(helper.make_node("Conv", [cur, f"w{i}_dq", f"b{i}_dq"], [f"conv{i}"],
                                          pads=[stage.padding] * 4,
                                          strides=[stage.stride] * 2))
            nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]))
            following = quant[q_index]
            s_act = act_scale(stage.out_ratio, stage.out_bits, following.act_bits_hi)
            cur = qdq(f"relu{i}", s_act, f"act{i}")
        else:
            w = const(f"w{i}", np.ascontiguousarray(q8.T))
            nodes.append(helper.make_node("DequantizeLinear", [w, ws, wz], [f"w{i}_dq"], axis=1))
            nodes.append(helper.make_node("MatMul", [cur, f"w{i}_dq"], [f"mm{i}"]))
            nodes.append(helper.make_node("Add", [f"mm{i}", const(f"bias{i}", stage.bias)],
                                          ["logits"]))
    shape = [BATCH] + list(deploy.input_shape)
    graph = helper.make_graph(
        nodes, "digits_cnn_qdq", [helper.make_tensor_value_info("x", TensorProto.UINT8, shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def stage_seconds(deploy, x, backend, repeats: int, clock: str) -> list:
    """[(stage name, seconds)] for each stage of ``deploy.forward(x, backend)``, run the way
    forward runs it (the backend's fused kernels and pooling when it has them)."""
    from soniq_ref.stages import BackendRun, QuantStage

    packed, kernels = deploy._prepared(f"object-{id(backend)}", backend)
    packed = iter(packed)
    rows, codes = [], x
    for i, stage in enumerate(deploy.stages):
        weights = [next(packed)] if isinstance(stage, QuantStage) else []

        def run(c=codes, s=stage, w=weights):
            return s.run(c, BackendRun(backend, kernels, iter(w), input_checked=True))
        if stage.kind == "flatten":
            codes = run()
            continue
        name = stage.kind if not isinstance(stage, QuantStage) else \
            f"{stage.kind} + epilogue" if stage.final else \
            f"{stage.kind} + requantize" + (" (fused)" if kernels is not None else "")
        rows.append((f"{i}: {name}", median_seconds(run, repeats, clock=clock)))
        codes = run()
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the measurements to this JSON file")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training phase")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="single-threaded rows: wall time or the thread's CPU time "
                             "(multi-threaded rows always use wall time)")
    parser.add_argument("--stages", action="store_true",
                        help="also time each stage of the soniq forward pass (1 thread)")
    args = parser.parse_args(argv)

    from soniq_fast.cpu import BACKEND
    from soniq_ref.data import load_dataset
    from soniq_ref.train import TrainConfig, train

    deploy = train(TrainConfig(epochs_phase1=args.epochs, epochs_phase2=args.epochs,
                               seed=0)).deploy
    x = load_dataset("digits").x_test[:BATCH]
    x = np.concatenate([x] * (-(-BATCH // len(x))))[:BATCH] if len(x) < BATCH else x
    model = qdq_model(deploy)
    ref_logits = deploy.forward(x, backend="ref")
    rows = []
    for threads in sorted({1, len(os.sched_getaffinity(0))}):
        ours = BACKEND.with_threads(threads)
        logits = deploy.forward(x, backend=ours)
        assert np.array_equal(logits.view(np.uint32), ref_logits.view(np.uint32))
        session = _session(model, threads)
        ort_logits = session.run(None, {"x": x})[0]
        agree = float(np.mean(ort_logits.argmax(1) == logits.argmax(1)))
        clock = clock_for(args.clock, threads)
        # samples taken in turn, so load changes hit both alike
        t_ort, t_ours = paired_median_seconds(
            [lambda: session.run(None, {"x": x}), lambda: deploy.forward(x, backend=ours)],
            args.repeats, clock=clock)
        rows.append(dict(threads=threads, batch=BATCH, clock=clock, soniq_s=t_ours,
                         ort_qdq_s=t_ort, ratio_ort=t_ort / t_ours, argmax_agreement=agree))
    print(markdown_table(["threads", "batch", "soniq cpu ms", "ORT INT8 QDQ ms", "ORT / soniq",
                          "same class"],
                         [[r["threads"], r["batch"], f"{r['soniq_s'] * 1e3:.3f}",
                           f"{r['ort_qdq_s'] * 1e3:.3f}", f"{r['ratio_ort']:.2f}x",
                           f"{100 * r['argmax_agreement']:.1f}%"] for r in rows]))
    stages = []
    if args.stages:
        clock = clock_for(args.clock, 1)
        stages = [dict(stage=name, soniq_s=t) for name, t in
                  stage_seconds(deploy, x, BACKEND.with_threads(1), args.repeats, clock)]
        print()
        print(markdown_table([f"stage (1 thread, {clock} clock)", "soniq cpu ms"],
                             [[r["stage"], f"{r['soniq_s'] * 1e3:.3f}"] for r in stages]))
    if args.json:
        write_json(args.json, {"benchmark": "deploy_cnn", "machine": machine(), "results": rows,
                               "stages": stages})
    return 0


if __name__ == "__main__":
    sys.exit(main())
