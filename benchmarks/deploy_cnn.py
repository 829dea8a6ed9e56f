"""End to end: the digits CNN deploy model on ``cpu`` against ONNX Runtime on an INT8 QDQ model.

It trains the default digits CNN briefly (the timing does not depend on how well it is
trained), exports it as a DeployModel, and builds the same network as an ONNX QDQ model
(``int8_network.qdq_model``):
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
from baselines import (_session, add_clock_option, clock_for, machine,  # noqa: E402
                       markdown_table, median_seconds, paired_median_seconds, write_json)
from int8_network import qdq_model  # noqa: E402

BATCH = 256


class _Taking:
    """An iterator over ``items`` that remembers what was taken from it."""

    def __init__(self, items):
        self.items, self.taken = iter(items), []

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.items)
        self.taken.append(item)
        return item


def stage_seconds(deploy, x, backend, repeats: int, clock: str) -> list:
    """[(stage name, seconds)] for each stage of ``deploy.forward(x, backend)``, run the way
    forward runs it (the backend's fused kernels and pooling when it has them): each stage
    runs through its own ``run(codes, BackendRun)`` with the prepared weights it takes in
    the forward pass. A stage whose output is a view of its input (flattening) moves no
    data and gets no row."""
    from soniq_ref.stages import BackendRun

    packed, kernels = deploy._prepared(f"object-{id(backend)}", backend)
    rows, codes, weights = [], x, _Taking(packed)
    for i, stage in enumerate(deploy.stages):
        start = len(weights.taken)
        out = stage.run(codes, BackendRun(backend, kernels, weights, input_checked=True))
        taken = weights.taken[start:]

        def run(c=codes, s=stage, w=taken):
            return s.run(c, BackendRun(backend, kernels, iter(w), input_checked=True))
        if not np.shares_memory(out, codes):
            name = stage.kind if not taken else \
                f"{stage.kind} + epilogue" if stage.final else \
                f"{stage.kind} + requantize" + (" (fused)" if kernels is not None else "")
            rows.append((f"{i}: {name}", median_seconds(run, repeats, clock=clock)))
        codes = out
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the measurements to this JSON file")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of each training phase")
    parser.add_argument("--repeats", type=int, default=9)
    add_clock_option(parser)
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
    model = qdq_model(deploy, BATCH)
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
