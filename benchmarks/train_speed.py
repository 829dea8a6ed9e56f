"""Training speed: one epoch of the default digits CNN in soniq_ref vs PyTorch on CPU.

Times one training epoch (forward, cross-entropy, backward, Adam step; batch 64,
digits training split) of the same network -- conv 3x3 1->32, BN, ReLU, maxpool 2,
conv 3x3 32->64, BN, ReLU, maxpool 2, linear 256->10 -- in one process:

* soniq_ref in float mode (the --fp32 baseline), noise mode (phase 1, with the
  bit-budget penalty and the precision optimizer) and exact mode (phase 2, integer
  core, bits snapped to the default palettes);
* PyTorch float32 on CPU (torch.nn, same shapes, same batch size, same optimizer).

Each figure is the best of ``--repeats`` timed epochs after one warm-up epoch.
Prints a markdown table with each mode's ratio to PyTorch and, with ``--json``,
writes the figures to a file. PyTorch is a benchmark-only extra
(``pip install -e ".[bench-torch]"``); without it the script says so and exits 2.

    python benchmarks/train_speed.py [--repeats 3] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

BATCH = 64


def _epochs_numpy(model, mode, x, y, repeats):
    from soniq_ref import budget
    from soniq_ref.loss import softmax_cross_entropy
    from soniq_ref.optim import Adam

    model.set_mode(mode)
    theta = {k: p for k, p in model.params.items() if ".theta_" in k}
    main = {k: p for k, p in model.params.items() if k not in theta}
    opt, theta_opt = Adam(main), Adam(theta)
    layers = model.quant_layers()

    def epoch():
        for start in range(0, len(x), BATCH):
            logits = model.forward(x[start:start + BATCH])
            _, dlogits = softmax_cross_entropy(logits, y[start:start + BATCH])
            model.backward(dlogits)
            if mode == "noise":
                budget.add_budget_grads(layers, 0.05, 0.05)
            grads = model.collect_grads()
            opt.step(grads, 1e-3)
            if mode == "noise":
                theta_opt.step(grads, 1e-2)

    return _best(epoch, repeats)


def _best(epoch, repeats):
    epoch()                                   # warm-up (clip initialisation, caches)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return min(times)


def _soniq_times(x, y, repeats):
    from soniq_ref.models import cnn
    from soniq_ref.train import snap

    model = cnn(x.shape[1:], 10, seed=0)
    results = {}
    for mode in ("float", "noise", "exact"):
        if mode == "exact":
            snap(model.quant_layers(), 2.0, 4.0)
        results[mode] = _epochs_numpy(model, mode, x, y, repeats)
    return results


def _torch_time(torch, x, y, repeats):
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 10))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def epoch():
        for start in range(0, len(xt), BATCH):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[start:start + BATCH]), yt[start:start + BATCH])
            loss.backward()
            opt.step()

    return _best(epoch, repeats)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="threads for PyTorch and for NumPy's BLAS (default 1; "
                             "soniq train runs BLAS single-threaded)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("train_speed: PyTorch is not installed; it is the baseline of this benchmark. "
              "Install it with: pip install -e \".[bench-torch]\"", file=sys.stderr)
        return 2
    from threadpoolctl import threadpool_limits

    from soniq_ref.data import load_dataset

    torch.set_num_threads(args.threads)
    limits = threadpool_limits(limits=args.threads, user_api="blas")

    data = load_dataset("digits")
    x = data.x_train.astype(np.float32) / np.float32(255)
    y = data.y_train
    ours = _soniq_times(x, y, args.repeats)
    baseline = _torch_time(torch, x, y, args.repeats)
    limits.restore_original_limits()
    machine = f"{platform.machine()}, {os.cpu_count()} logical CPUs, {platform.processor() or 'cpu'}"
    print(f"one epoch, digits train split ({len(x)} images), batch {BATCH}, best of "
          f"{args.repeats}; {args.threads} thread(s) for PyTorch and NumPy BLAS; "
          f"torch {torch.__version__}; numpy {np.__version__}; {machine}\n")
    print("| implementation | seconds per epoch | ratio to PyTorch |")
    print("|---|---:|---:|")
    print(f"| PyTorch float32 | {baseline:.3f} | 1.00x |")
    for mode, seconds in ours.items():
        print(f"| soniq_ref {mode} mode | {seconds:.3f} | {seconds / baseline:.2f}x |")
    if args.json:
        report = {"batch": BATCH, "images": int(len(x)), "repeats": args.repeats,
                  "threads": args.threads, "torch": torch.__version__,
                  "numpy": np.__version__, "machine": machine,
                  "seconds": {"torch_float32": baseline, **{f"soniq_ref_{m}": s
                                                            for m, s in ours.items()}}}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
