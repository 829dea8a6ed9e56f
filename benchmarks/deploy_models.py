"""End to end: a deploy model on ``cpu`` against ONNX Runtime INT8 QDQ and PyTorch fbgemm INT8.

The model is ``--model PATH`` (a ``.soniq`` file, e.g. from ``soniq train --dataset
fashion-mnist``), or by default the network ``soniq train --dataset fashion-mnist``
builds -- conv 3x3 1->32, batch norm, ReLU, max pool 2, conv 3x3 32->64, batch norm,
ReLU, max pool 2, linear 3136->10; weight palette (1, 4), activation palette (2, 8) --
made deterministically without training (:func:`fashion_deploy`, seed 0): random
precision scores and batch norm statistics, then the trainer's own snapping to its
default budget (2.0 mean weight bits, 4.0 mean activation bits), which puts about a
third of each kind of channel at the high level, scattered over the layers as after
training. The timing does not depend on the accuracy of the weights (every kernel
runs the same work whatever the values), so an untrained model times like a trained
one with the same bits. Inputs are Fashion-MNIST test images when the dataset is on
this machine and the model takes 1x28x28 images, else seeded random pixels.

In one process, per batch size and thread count, it times (medians over ``--repeats``
samples taken in turn, so load from elsewhere hits all alike):

  soniq cpu      ``DeployModel.forward`` on the ``cpu`` backend (weights packed beforehand)
  ORT QDQ        the same network as an ONNX INT8 QDQ model in ONNX Runtime
                 (``int8_network.qdq_model``: per-channel int8 weights, one uint8 scale per
                 activation tensor, fused by ORT into QLinearConv and integer matmuls)
  ORT exact      the deploy model's exact ONNX export (``soniq_ref.onnx_export``:
                 ConvInteger/MatMulInteger on the shifted codes, the float epilogue and
                 requantization as graph operators) in ONNX Runtime
  fbgemm INT8    the same network as PyTorch quantized modules (``int8_network.fbgemm_model``:
                 ConvReLU2d/Linear, per-channel qint8 weights, quint8 activations,
                 ``torch.backends.quantized.engine = "fbgemm"``)

and prints a markdown table with ratio = baseline time / soniq time (> 1: soniq is
faster). Exactness: soniq's logits are asserted equal to the reference backend's bit
for bit; for each baseline the script reports whether its logits equal soniq's bit for
bit, the largest difference and how often the predicted class agrees. The QDQ and
fbgemm networks cannot be exact (a per-tensor activation scale rounds channels
narrower than A bits on the finer grid, 8-bit weight rows lose their lowest bit, and
they requantize in their own operation order); the exact export is exact wherever the
runtime's integer convolution and matmul are (not where ORT adds u8 x s8 products in
saturating int16 pairs, as its AVX2 kernels do).

Clocks: with ``--clock thread`` the single-threaded rows use the calling thread's CPU
time (all four run on the calling thread there), which leaves out time spent waiting for
a core on a busy machine. Rows with more threads always use wall time -- a thread's CPU
clock cannot see work done on other threads -- so a 1-thread row and a 2-thread row are
comparable only when both use wall time (``--clock wall``) on an otherwise idle machine.
PyTorch's OpenMP workers are told not to spin between calls (``OMP_WAIT_POLICY=PASSIVE``
unless set), as ONNX Runtime's are (``session.intra_op.allow_spinning = 0``).

``--network resnet [--width W]`` builds the untrained ResNet of ``soniq train --model resnet
--dataset fashion-mnist`` the same way (residual blocks and the pooled classifier; the
fbgemm baseline is not built for it).

Usage:  python benchmarks/deploy_models.py [--model PATH | --network resnet [--width W]]
            [--batches 1,256] [--threads 1,2]
            [--repeats 9] [--clock thread] [--stages] [--json out.json]
Needs onnx, onnxruntime (``pip install -e ".[bench]"``) and torch
(``pip install -e ".[bench-torch]"``); without them it says so and exits 2.
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
                       markdown_table, paired_median_seconds, write_json)
from int8_network import fbgemm_maps, fbgemm_model, qdq_model  # noqa: E402

FASHION_SHAPE = (1, 28, 28)
FASHION_CLASSES = 10
BASELINES = ("ORT QDQ", "ORT exact", "fbgemm INT8")


def fashion_deploy(seed: int = 0, network: str = "cnn", width: int | None = None):
    """The default Fashion-MNIST network of ``soniq train --model NETWORK`` (``cnn``, or
    ``resnet`` at ``width``, default the trainer's) as a DeployModel, untrained.

    Built like the trainer builds it (same architecture, palettes and seed), with
    seeded random precision scores ``theta`` and batch norm statistics; the clips are
    set from one batch of seeded random pixels, and ``snap`` fixes the bits to the
    trainer's default budget (see the module docstring)."""
    from soniq_ref.deploy import DeployModel
    from soniq_ref.layers.batchnorm import BatchNorm
    from soniq_ref.models import DEFAULT_DEPTHS, cnn, resnet
    from soniq_ref.train import TrainConfig, snap

    config = TrainConfig(dataset="fashion-mnist", width=width or TrainConfig.width)
    rng = np.random.default_rng(seed)
    palettes = dict(weight_palette=config.weight_palette, act_palette=config.act_palette,
                    seed=seed)
    net = cnn(FASHION_SHAPE, FASHION_CLASSES, channels=config.channels, **palettes) \
        if network == "cnn" else \
        resnet(FASHION_SHAPE, FASHION_CLASSES, depth=DEFAULT_DEPTHS["resnet"],
               width=config.width, **palettes)
    net.set_mode("noise")
    net.eval()
    pixels = rng.integers(0, 256, (config.batch_size,) + FASHION_SHAPE).astype(np.uint8)
    net.forward(pixels.astype(np.float32) / np.float32(255))    # initialises the clips
    for layer in net.layers:
        if isinstance(layer, BatchNorm):
            layer.running_mean[...] = rng.standard_normal(layer.channels)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.channels)
    for layer in net.quant_layers():
        for name in ("theta_w", "theta_a"):
            if name in layer.params:
                theta = layer.params[name]
                theta[...] = rng.standard_normal(theta.shape).astype(theta.dtype)
    snap(net.quant_layers(), config.target_weight_bits, config.target_act_bits)
    net.set_mode("exact")
    return DeployModel.from_model(net, FASHION_SHAPE)


def bits_summary(deploy) -> list[str]:
    """One line per quantized stage: its shape and how many channels have each width."""
    def counts(bits):
        values, n = np.unique(bits, return_counts=True)
        return " ".join(f"{v}b x{c}" for v, c in zip(values, n))

    lines = []
    for i, stage in enumerate(deploy.quant_stages):
        a = "8b pixels" if i == 0 else counts(stage.a_bits)
        lines.append(f"{stage.kind} {list(stage.w_codes.shape)}: weights {counts(stage.w_bits)}; "
                     f"inputs {a}")
    return lines


def sample_inputs(deploy, batch: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """(uint8 [batch, *input_shape], where they came from)."""
    if deploy.input_shape == FASHION_SHAPE:
        from soniq_ref.data import DatasetError, load_dataset
        try:
            x = load_dataset("fashion-mnist").x_test
        except DatasetError:
            pass
        else:
            return np.resize(x, (batch,) + x.shape[1:]), "Fashion-MNIST test images"
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (batch,) + deploy.input_shape).astype(np.uint8),
            "seeded random pixels")


def agreement(name: str, got: np.ndarray, ours: np.ndarray, threads: int) -> dict:
    """How a baseline's float32 logits compare with soniq's."""
    got = np.asarray(got, np.float32)
    return dict(baseline=name, threads=threads,
                bit_equal=bool(np.array_equal(got.view(np.uint32), ours.view(np.uint32))),
                max_abs_diff=float(np.max(np.abs(got.astype(np.float64) - ours))),
                same_class=float(np.mean(got.argmax(1) == ours.argmax(1))))


def baseline_runners(deploy, x: np.ndarray, threads: int, torch, logits: np.ndarray) -> dict:
    """name -> callable running that baseline on ``x`` with ``threads`` threads."""
    from soniq_ref.onnx_export import to_onnx

    qdq = _session(qdq_model(deploy, x.shape[0]), threads)
    exact = _session(to_onnx(deploy), threads)
    runners = {"ORT QDQ": lambda: qdq.run(None, {"x": x})[0],
               "ORT exact": lambda: exact.run(None, {"pixels": x})[0]}
    if fbgemm_maps(deploy):
        torch.set_num_threads(threads)
        fbgemm = fbgemm_model(deploy, logits)
        runners["fbgemm INT8"] = lambda: fbgemm(x)
    return runners


def bench_row(deploy, x, threads: int, repeats: int, clock_name: str, torch) -> tuple:
    """(timing row, [agreement rows]) of one batch size and thread count."""
    from soniq_fast.cpu import BACKEND

    ours = BACKEND.with_threads(threads)
    logits = deploy.forward(x, backend=ours)
    reference = deploy.forward(x, backend="ref")
    assert np.array_equal(logits.view(np.uint32), reference.view(np.uint32)), \
        "the cpu backend's logits differ from the reference's"
    runners = baseline_runners(deploy, x, threads, torch, logits)
    checks = [agreement(name, run(), logits, threads) for name, run in runners.items()]
    clock = clock_for(clock_name, threads)
    times = paired_median_seconds([lambda: deploy.forward(x, backend=ours), *runners.values()],
                                  repeats, clock=clock)
    row = dict(batch=int(x.shape[0]), threads=threads, clock=clock, soniq_s=times[0],
               **{f"{name}_s": t for name, t in zip(runners, times[1:])})
    return row, checks


def timing_table(rows: list) -> str:
    header = ["batch", "threads (clock)", "soniq cpu ms"]
    for name in BASELINES:
        header += [f"{name} ms", f"{name} / soniq"]
    body = []
    for r in rows:
        cells = [r["batch"], f"{r['threads']} ({r['clock']})", f"{r['soniq_s'] * 1e3:.3f}"]
        for name in BASELINES:
            t = r.get(name + "_s")
            cells += ["-", "-"] if t is None else [f"{t * 1e3:.3f}", f"{t / r['soniq_s']:.2f}x"]
        body.append(cells)
    return markdown_table(header, body)


def exactness_table(checks: list, batch: int) -> str:
    return markdown_table(
        [f"baseline (batch {batch})", "threads", "logits equal soniq's bit for bit",
         "max abs logit difference", "same class"],
        [[c["baseline"], c["threads"], "yes" if c["bit_equal"] else "no",
          f"{c['max_abs_diff']:.3g}", f"{100 * c['same_class']:.1f}%"] for c in checks])


def missing_packages() -> list[str]:
    """The baselines' packages this Python lacks, with how to install them."""
    import importlib.util
    extras = {"onnx": "bench", "onnxruntime": "bench", "torch": "bench-torch"}
    return [f"{name} (pip install -e \".[{extra}]\")" for name, extra in extras.items()
            if importlib.util.find_spec(name) is None]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .soniq deploy model (default: the untrained "
                                        "Fashion-MNIST network described above)")
    parser.add_argument("--network", choices=("cnn", "resnet"), default="cnn",
                        help="without --model: which untrained Fashion-MNIST network")
    parser.add_argument("--width", type=int, default=None,
                        help="--network resnet: channels of the first stage (default: "
                             "soniq train's)")
    parser.add_argument("--batches", default="1,256", help="comma-separated batch sizes")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--repeats", type=int, default=9)
    add_clock_option(parser)
    parser.add_argument("--stages", action="store_true",
                        help="also time each stage of the soniq forward pass (1 thread)")
    parser.add_argument("--json", help="write the measurements to this JSON file")
    args = parser.parse_args(argv)
    missing = missing_packages()
    if missing:
        print("deploy_models: the baselines need packages this Python lacks: "
              + ", ".join(missing), file=sys.stderr)
        return 2
    # PyTorch's OpenMP workers sleep between parallel regions instead of spinning, as
    # ONNX Runtime's do here (baselines._session): samples of every implementation are taken
    # in turn, and spinning workers would hold the cores the next one needs
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        print("deploy_models: this PyTorch build has no fbgemm quantized engine "
              f"(it has: {', '.join(torch.backends.quantized.supported_engines)})",
              file=sys.stderr)
        return 2

    from soniq_fast.cpu import BACKEND
    from soniq_ref import load_model

    deploy = load_model(args.model) if args.model else \
        fashion_deploy(network=args.network, width=args.width)
    batches = [int(b) for b in args.batches.split(",")]
    threads_list = [int(t) for t in args.threads.split(",")]
    what = f"untrained default Fashion-MNIST {args.network} (seed 0" + \
        (f", width {args.width})" if args.width and args.network == "resnet" else ")")
    if not fbgemm_maps(deploy):
        print("fbgemm INT8: not built for this model (int8_network maps plain conv/linear "
              "stacks to PyTorch's quantized modules only)", file=sys.stderr)
    print(f"model: {args.model or what}; "
          f"cpu backend ISA {BACKEND.isa}; torch {torch.__version__}", file=sys.stderr)
    for line in bits_summary(deploy):
        print(f"  {line}", file=sys.stderr)
    rows, checks = [], []
    for batch in batches:
        x, source = sample_inputs(deploy, batch)
        for threads in threads_list:
            row, found = bench_row(deploy, x, threads, args.repeats, args.clock, torch)
            rows.append(row)
            if batch == max(batches):
                checks += found
            print(f"  batch {batch} ({source}), {threads} thread(s): soniq "
                  f"{row['soniq_s'] * 1e3:.3f} ms", file=sys.stderr)
    print(timing_table(rows))
    print()
    print(exactness_table(checks, max(batches)))
    stages = []
    if args.stages:
        from deploy_cnn import stage_seconds
        clock = clock_for(args.clock, 1)
        for batch in batches:
            x, _ = sample_inputs(deploy, batch)
            stages += [dict(batch=batch, stage=name, soniq_s=t) for name, t in
                       stage_seconds(deploy, x, BACKEND.with_threads(1), args.repeats, clock)]
        names = list(dict.fromkeys(r["stage"] for r in stages))
        ms = {(r["batch"], r["stage"]): f"{r['soniq_s'] * 1e3:.3f}" for r in stages}
        print()
        print(markdown_table([f"stage (1 thread, {clock} clock)"]
                             + [f"batch {b}: soniq cpu ms" for b in batches],
                             [[name] + [ms[b, name] for b in batches] for name in names]))
    if args.json:
        write_json(args.json, {"benchmark": "deploy_models", "model": args.model or "default",
                               "isa": BACKEND.isa, "torch": torch.__version__,
                               "machine": machine(), "bits": bits_summary(deploy),
                               "results": rows, "exactness": checks, "stages": stages})
    return 0


if __name__ == "__main__":
    sys.exit(main())
