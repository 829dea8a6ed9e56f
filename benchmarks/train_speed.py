"""Training speed: one epoch of the default CNN or ViT in soniq_ref vs PyTorch on CPU.

Times one training epoch (forward, cross-entropy, backward, Adam step; batch 64)
of the network ``soniq train`` builds for the dataset, in one process. ``--model cnn``
(the default): conv 3x3 1->32, BN, ReLU, maxpool 2, conv 3x3 32->64, BN, ReLU,
maxpool 2, linear -> 10 (linear 256->10 on the 8x8 digits, 3136->10 on the 28x28
Fashion-MNIST images). ``--model vit``: ``soniq_ref.models.vit`` with its defaults --
a 4x4 grid of patches (7x7 on Fashion-MNIST) projected to 64 features, a learned
position table, 4 pre-norm blocks (LayerNorm, 4-head self-attention, LayerNorm, MLP
64->128->64 with ReLU, residual adds), LayerNorm, the mean over tokens, linear -> 10:

* soniq_ref in float mode (the --fp32 baseline), noise mode (phase 1, with the
  bit-budget penalty and the precision optimizer) and exact mode (phase 2, integer
  core, bits snapped to the default palettes);
* PyTorch float32 on CPU (torch.nn, same shapes, same batch size, same optimizer).

For each thread count in ``--threads`` (for soniq_ref BLAS threads and as many
workers for the work between the matrix products, as ``soniq train --threads``
runs; intra-op threads for PyTorch) the implementations take turns, one epoch each, ``--repeats``
times after a few warm-up batches each, and each figure is the best of its repeats:
a burst of load elsewhere on the machine then slows all of them alike.
``--clock thread`` measures the CPU time of the calling thread (robust on a busy
machine, but blind to worker threads: it applies to the one-thread runs, the others
use wall time); ``--clock wall`` (the default) measures elapsed time. Prints a
markdown table with each ratio to PyTorch at the same thread count and each
speed-up of the last thread count over the first; ``--json`` writes the figures. PyTorch is a benchmark-only extra
(``pip install -e ".[bench-torch]"``); without it the script says so and exits 2.

    python benchmarks/train_speed.py [--model cnn|vit] [--dataset digits|fashion-mnist]
        [--data-dir DIR] [--batches N] [--repeats 3] [--threads 1,all] [--clock wall|thread] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

import soniq_ref  # noqa: F401 -- first: sets OpenBLAS's idle wait, as `soniq train` runs
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(1, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
from baselines import CLOCKS, add_clock_option, clock_for  # noqa: E402

BATCH = 64
WARM_UP = 5             # batches run before timing (clip initialisation, caches, threads)
MODES = ("float", "noise", "exact")


def _numpy_epoch(model, mode, x, y):
    """One epoch of ``model`` in ``mode`` (a fresh optimizer, as a new phase has)."""
    from soniq_ref import budget
    from soniq_ref.loss import softmax_cross_entropy
    from soniq_ref.optim import Adam

    theta = {k: p for k, p in model.params.items() if ".theta_" in k}
    main = {k: p for k, p in model.params.items() if k not in theta}
    opt, theta_opt = Adam(main), Adam(theta)
    layers = model.quant_layers()

    def epoch(images=len(x)):
        model.set_mode(mode)
        for start in range(0, min(images, len(x)), BATCH):
            logits = model.forward(x[start:start + BATCH])
            _, dlogits = softmax_cross_entropy(logits, y[start:start + BATCH])
            model.backward(dlogits)
            if mode == "noise":
                budget.add_budget_grads(layers, 0.05, 0.05)
            grads = model.collect_grads()
            opt.step(grads, 1e-3)
            if mode == "noise":
                theta_opt.step(grads, 1e-2)

    return epoch


def _soniq_epochs(name, x, y) -> dict:
    """{"soniq_ref <mode>": epoch function}; the modes share one model, bits snapped
    (after one noise-mode batch has set the clips) before exact mode runs."""
    from soniq_ref.models import cnn, vit
    from soniq_ref.train import snap

    model = (cnn if name == "cnn" else vit)(x.shape[1:], 10, seed=0)
    model.set_mode("noise")
    model.forward(x[:BATCH])
    snap(model.quant_layers(), 2.0, 4.0)
    return {f"soniq_ref {mode}": _numpy_epoch(model, mode, x, y) for mode in MODES}


def _torch_cnn(torch, shape):
    nn = torch.nn
    c, h, w = shape
    flat = 64 * (h // 4) * (w // 4)
    return nn.Sequential(nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(flat, 10))


def _torch_vit(torch, shape, dim=64, heads=4, depth=4, mlp_ratio=2):
    """soniq_ref.models.vit's network in torch.nn (same shapes, same order of layers)."""
    nn = torch.nn
    c, h, w = shape
    p = h // 4

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
            self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
            self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.ReLU(),
                                     nn.Linear(mlp_ratio * dim, dim))

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(self.ln1(x)).reshape(b, t, 3, heads, dim // heads) \
                .permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) * (dim // heads) ** -0.5, dim=-1)
            x = x + self.out((att @ v).transpose(1, 2).reshape(b, t, dim))
            return x + self.mlp(self.ln2(x))

    class ViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(c * p * p, dim)
            self.table = nn.Parameter(0.02 * torch.randn((h // p) * (w // p), dim))
            self.blocks = nn.Sequential(*[Block() for _ in range(depth)])
            self.ln, self.head = nn.LayerNorm(dim), nn.Linear(dim, 10)

        def forward(self, x):
            b = x.shape[0]
            rows = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5)
            tokens = self.proj(rows.reshape(b, -1, c * p * p)) + self.table
            return self.head(self.ln(self.blocks(tokens)).mean(dim=1))

    return ViT()


def _torch_epoch(name, torch, x, y):
    nn = torch.nn
    torch.manual_seed(0)
    net = (_torch_cnn if name == "cnn" else _torch_vit)(torch, x.shape[1:])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def epoch(images=len(xt)):
        for start in range(0, min(images, len(x)), BATCH):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[start:start + BATCH]), yt[start:start + BATCH])
            loss.backward()
            opt.step()

    return epoch


def _best_of_turns(epochs: dict, repeats: int, clock) -> dict:
    """Warm each up (a few batches), then ``repeats`` rounds of one epoch each in turn;
    the minima."""
    for epoch in epochs.values():
        epoch(WARM_UP * BATCH)
    times = {name: [] for name in epochs}
    for _ in range(repeats):
        for name, epoch in epochs.items():
            start = clock()
            epoch()
            times[name].append(clock() - start)
    return {name: min(t) for name, t in times.items()}


def _thread_counts(text: str) -> list[int]:
    every = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [every if t == "all" else int(t) for t in text.split(",")]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("cnn", "vit"), default="cnn")
    parser.add_argument("--dataset", choices=("digits", "fashion-mnist"), default="digits")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the Fashion-MNIST files (default: where soniq finds "
                             "them)")
    parser.add_argument("--batches", type=int, default=None,
                        help="time only the first N batches of the epoch (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", default="1",
                        help="comma-separated thread counts, 'all' = one per core "
                             "(default 1)")
    add_clock_option(parser)
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    threads = _thread_counts(args.threads)
    clocks = {count: clock_for(args.clock, count) for count in threads}
    try:
        import torch
    except ImportError:
        print("train_speed: PyTorch is not installed; it is the baseline of this benchmark. "
              "Install it with: pip install -e \".[bench-torch]\"", file=sys.stderr)
        return 2
    from threadpoolctl import threadpool_limits

    from soniq_ref import parallel
    from soniq_ref.data import load_dataset

    data = load_dataset(args.dataset, args.data_dir)
    n = len(data.x_train) if args.batches is None else min(len(data.x_train),
                                                            args.batches * BATCH)
    x = data.x_train[:n].astype(np.float32) / np.float32(255)
    y = data.y_train[:n]
    seconds = {}
    for count in threads:
        torch.set_num_threads(count)
        with threadpool_limits(limits=count, user_api="blas"), parallel.workers(count):
            epochs = {"PyTorch float32": _torch_epoch(args.model, torch, x, y),
                      **_soniq_epochs(args.model, x, y)}
            seconds[count] = _best_of_turns(epochs, args.repeats, CLOCKS[clocks[count]])
    machine = (f"{_cpu_model()}, {platform.machine()}, {os.cpu_count()} logical CPUs")
    print(f"one epoch, {args.model}, {args.dataset} ({len(x)} training images), batch {BATCH}, best of "
          f"{args.repeats}; torch {torch.__version__}; numpy {np.__version__}; {machine}\n")
    names = list(seconds[threads[0]])
    heads = " | ".join(f"{t} thread{'s' * (t > 1)} ({clocks[t]}): s / epoch | ratio to PyTorch"
                       for t in threads)
    speedup = f" | {threads[-1]} vs {threads[0]} threads" if len(threads) > 1 else ""
    print(f"| implementation | {heads}{speedup} |")
    print("|---|" + "---:|---:|" * len(threads) + ("---:|" if speedup else ""))
    for name in names:
        cells = " | ".join(f"{seconds[t][name]:.3f} | "
                           f"{seconds[t][name] / seconds[t]['PyTorch float32']:.2f}x"
                           for t in threads)
        gain = (f" | {seconds[threads[0]][name] / seconds[threads[-1]][name]:.2f}x"
                if speedup else "")
        print(f"| {name} | {cells}{gain} |")
    if args.json:
        report = {"model": args.model, "dataset": args.dataset, "batch": BATCH, "images": int(len(x)),
                  "repeats": args.repeats, "clocks": {str(t): c for t, c in clocks.items()},
                  "torch": torch.__version__,
                  "numpy": np.__version__, "machine": machine,
                  "seconds": {str(t): seconds[t] for t in threads}}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
