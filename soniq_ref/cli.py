"""The ``soniq`` command: ``soniq train``, ``soniq eval``, ``soniq info``.

User errors (bad arguments, missing or malformed datasets and model files)
print one line ``soniq: error: ...`` to stderr and exit with status 2 (usage)
or 1 (anything else), without a traceback. ``SONIQ_DEBUG=1`` re-raises them.
See docs/cli.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from .data import DATASET_NAMES
from .models import MODEL_NAMES
from .train.config import TrainConfig


class UsageError(Exception):
    """A command-line usage error (exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):          # one line, no usage dump
        raise UsageError(message)


def _palette(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected two bit widths like 1,4, got {text!r}")
    lo, hi = (int(p) for p in parts)
    if not 1 <= lo <= hi <= 8:
        raise argparse.ArgumentTypeError(f"levels must satisfy 1 <= lo <= hi <= 8, got {text!r}")
    return lo, hi


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    parser = _Parser(prog="soniq", description="Noise-injected mixed-precision training "
                                                "and exact integer inference.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a mixed-precision network")
    t.add_argument("--dataset", choices=DATASET_NAMES, default=defaults.dataset)
    t.add_argument("--data-dir", default=None, help="folder of the mnist/cifar10 files")
    t.add_argument("--model", choices=MODEL_NAMES, default=defaults.model)
    t.add_argument("--weight-palette", type=_palette, default=defaults.weight_palette)
    t.add_argument("--act-palette", type=_palette, default=defaults.act_palette)
    t.add_argument("--target-weight-bits", type=float, default=defaults.target_weight_bits)
    t.add_argument("--target-act-bits", type=float, default=defaults.target_act_bits)
    t.add_argument("--epochs-phase1", type=int, default=defaults.epochs_phase1)
    t.add_argument("--epochs-phase2", type=int, default=defaults.epochs_phase2)
    t.add_argument("--seed", type=int, default=defaults.seed)
    t.add_argument("--batch-size", type=int, default=defaults.batch_size)
    t.add_argument("--lr", type=float, default=defaults.lr)
    t.add_argument("--fp32", action="store_true", help="train the float baseline instead")
    t.add_argument("--out", default=None, help="output folder (default runs/<dataset>)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("--resume", metavar="DIR", default=None,
                   help="continue the interrupted run in DIR from its last checkpoint "
                        "(its options come from the checkpoint)")

    e = sub.add_parser("eval", help="accuracy of a .soniq model on a dataset's test split")
    e.add_argument("model_file", metavar="MODEL")
    e.add_argument("--dataset", choices=DATASET_NAMES, required=True)
    e.add_argument("--data-dir", default=None)
    e.add_argument("--backend", default="ref", help="ref, cpu, cuda or cuda-emu")
    e.add_argument("--json", action="store_true", help="print JSON")

    i = sub.add_parser("info", help="layers, shapes, bits and size of a .soniq model")
    i.add_argument("model_file", metavar="MODEL")
    i.add_argument("--json", action="store_true", help="print JSON")

    from soniq_sweep import cli as sweep_cli        # the sweep's options; Ray loads lazily
    s = sub.add_parser("sweep", help="train a grid of configs (budgets, palettes, seeds) on "
                                     "Ray; results table and accuracy-bits frontier")
    sweep_cli.add_arguments(s, _palette, DATASET_NAMES, MODEL_NAMES, defaults)
    return parser


def _check_budgets(config) -> None:
    """A mean-bits budget outside its palette's two levels cannot be met (below ``lo``)
    or does not constrain anything (above ``hi``): refuse it before training."""
    for option, palette, target in (
            ("--target-weight-bits", config.weight_palette, config.target_weight_bits),
            ("--target-act-bits", config.act_palette, config.target_act_bits)):
        lo, hi = palette
        if math.isfinite(target) and not lo <= target <= hi:    # NaN: validate() says so
            raise UsageError(f"argument {option}: {target:g} is outside the palette's range "
                             f"{lo}..{hi}; choose a budget between the palette's two levels")


def _config_from_args(args) -> TrainConfig:
    config = TrainConfig(dataset=args.dataset, data_dir=args.data_dir, model=args.model,
                         weight_palette=args.weight_palette, act_palette=args.act_palette,
                         target_weight_bits=args.target_weight_bits,
                         target_act_bits=args.target_act_bits,
                         epochs_phase1=args.epochs_phase1, epochs_phase2=args.epochs_phase2,
                         seed=args.seed, batch_size=args.batch_size, lr=args.lr,
                         fp32=args.fp32)
    if not config.fp32:
        _check_budgets(config)       # the option names in the message, before validate()
    return config.validate()


def _config_from_checkpoint(run_dir: Path) -> TrainConfig:
    from .train import checkpoint

    saved = checkpoint.load(run_dir)[1]["progress"]["config"]
    tuples = {k: tuple(v) for k, v in saved.items() if isinstance(v, list)}
    return TrainConfig(**{**saved, **tuples}).validate()


def _train(args) -> None:
    from .train import train
    from .train.outputs import write_run

    if args.resume:
        out = Path(args.resume)
        config = _config_from_checkpoint(out)
    else:
        out = Path(args.out if args.out else Path("runs") / args.dataset)
        config = _config_from_args(args)
    result = train(config, progress=not args.quiet, run_dir=out, resume=bool(args.resume))
    metrics = write_run(result, out)
    print(f"test accuracy {metrics['test_accuracy']:.2f}%  mean bits w {metrics['mean_weight_bits']:.3f} "
          f"a {metrics['mean_act_bits']:.3f}  model {metrics['model_bytes']} bytes "
          f"({metrics['compression_vs_fp32']:.2f}x vs float32)  {metrics['train_seconds']:.1f} s")
    print(f"wrote {out / 'metrics.json'}")


def _eval(args) -> None:
    from .data import load_dataset
    from .fileformat import load
    from .train.trainer import accuracy

    model = load(args.model_file)
    data = load_dataset(args.dataset, args.data_dir)
    if data.input_shape != model.input_shape:
        raise ValueError(f"dataset {args.dataset} has images {list(data.input_shape)} but the "
                         f"model expects {list(model.input_shape)}")
    acc = accuracy(model.predict(data.x_test, backend=args.backend), data.y_test)
    if args.json:
        print(json.dumps({"test_accuracy": acc, "dataset": args.dataset,
                          "backend": args.backend, "samples": int(len(data.y_test))}))
    else:
        print(f"test accuracy {acc!r} % ({len(data.y_test)} images, {args.dataset}, "
              f"backend {args.backend})")


def _info(args) -> None:
    from .fileformat import load

    model = load(args.model_file)
    size = Path(args.model_file).stat().st_size
    stages = model.describe()
    info = {"file": str(args.model_file), "bytes": size, "input_shape": list(model.input_shape),
            "n_classes": model.n_classes, "float32_bytes": model.float32_bytes(),
            "compression_vs_fp32": model.float32_bytes() / size, "stages": stages}
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{args.model_file}: {size} bytes, input {list(model.input_shape)}, "
          f"{model.n_classes} classes")
    print(f"{'#':>2}  {'layer':<8} {'output':<14} {'weights':<16} weight bits (bits:channels)"
          f"   input bits (bits:channels)")
    for n, row in enumerate(stages):
        line = f"{n:>2}  {row['kind']:<8} {str(row['output_shape']):<14}"
        if "weight_bits" in row:
            wb = " ".join(f"{b}:{c}" for b, c in row["weight_bits"].items())
            ab = " ".join(f"{b}:{c}" for b, c in row["input_bits"].items())
            line += f" {str(row['weight_shape']):<16} {wb:<27} {ab}"
        print(line.rstrip())
    print(f"float32 weights and biases {info['float32_bytes']} bytes; "
          f"compression {info['compression_vs_fp32']:.2f}x")


def _sweep(args) -> None:
    from soniq_sweep import cli as sweep_cli

    sweep_cli.run(args)


def _way_forward(exc) -> str:
    """What to do next, appended to the one-line error where the fix is clear."""
    from .data import DatasetError
    from .fileformat import SoniqFileError
    from .train.checkpoint import CheckpointError

    if isinstance(exc, CheckpointError):
        return "; start the run again without --resume"
    if isinstance(exc, SoniqFileError):
        return "; check the path, or write a new model with 'soniq train'"
    if isinstance(exc, DatasetError):
        return ("; --data-dir must hold the mnist IDX files or the cifar10 python batches "
                "(see docs/cli.md), or use --dataset digits, which needs no download")
    return ""


def main(argv=None) -> int:
    """Entry point of the ``soniq`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
        {"train": _train, "eval": _eval, "info": _info, "sweep": _sweep}[args.command](args)
    except UsageError as exc:
        print(f"soniq: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        if os.environ.get("SONIQ_DEBUG"):
            raise
        print(f"soniq: error: {' '.join(str(exc).split())}{_way_forward(exc)}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soniq: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
