"""The ``soniq`` argument parser: every option with its default, unit or format.

Options of ``soniq train`` default to ``None`` here and get their values from
:class:`~soniq_ref.train.config.TrainConfig`, so that ``--resume`` can tell which
options were given. Value checks happen while parsing, so a bad value is reported
with the option's name (``argument --batch-size: ...``), exit status 2.
"""

from __future__ import annotations

import argparse
import math

from ..backend import NAMES as BACKEND_NAMES
from ..data import DATASET_NAMES
from ..layers.transformer_block import ACTIVATIONS
from ..models import DEFAULT_DEPTHS, MODEL_NAMES, VIT_POOLS
from ..train.config import TrainConfig


class UsageError(Exception):
    """A command-line usage error (exit status 2)."""


class Parser(argparse.ArgumentParser):
    """Errors become :class:`UsageError` (one line, no usage dump)."""

    def error(self, message):
        raise UsageError(message)


def palette(text: str) -> tuple[int, int]:
    """``LO,HI`` -> (lo, hi) with 1 <= lo <= hi <= 8."""
    parts = text.split(",")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected two bit widths like 1,4, got {text!r}")
    lo, hi = (int(p) for p in parts)
    if not 1 <= lo <= hi <= 8:
        raise argparse.ArgumentTypeError(f"levels must satisfy 1 <= lo <= hi <= 8, got {text!r}")
    return lo, hi


def integer(least: int):
    """An integer >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r} (expected an "
                                             f"integer >= {least})") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {text!r}")
        return value
    return parse


def positive(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def folder(text: str) -> str:
    """A non-empty folder name."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text


def _pair(values) -> str:
    return ",".join(map(str, values))


def per_dataset(name: str, show=str) -> str:
    """A field's default for each dataset: ``30 for digits; 10 for mnist, fashion-mnist,
    cifar10``, or the one value all share."""
    from ..train.config import DATASET_DEFAULTS

    by_value = {}
    for dataset in DATASET_DEFAULTS:
        value = show(getattr(TrainConfig.for_dataset(dataset), name))
        by_value.setdefault(value, []).append(dataset)
    if len(by_value) == 1:
        return next(iter(by_value))
    return "; ".join(f"{v} for {', '.join(names)}" for v, names in by_value.items())


def fraction(text: str) -> float:
    """A number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _train_parser(sub) -> None:
    d = TrainConfig()
    t = sub.add_parser("train", help="train a mixed-precision network (writes a run folder)",
                       description="Train a mixed-precision network end to end and write "
                                   "metrics.json, model.soniq, history.csv, curves.png, "
                                   "bits.png and checkpoint.npz into --out.")
    t.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                   help=f"training data (default: {d.dataset}, bundled, no download)")
    t.add_argument("--data-dir", metavar="DIR", type=folder, default=None,
                   help="folder of the mnist IDX files or the cifar10 python batches "
                        "(default: none; digits needs none)")
    t.add_argument("--model", choices=MODEL_NAMES, default=None,
                   help=f"network: cnn (conv blocks), mlp, resnet (residual blocks, "
                        f"global average pooling) or vit (a Vision Transformer) "
                        f"(default: {d.model})")
    t.add_argument("--depth", metavar="N", type=integer(1), default=None,
                   help=f"resnet: quantized layers, 6 n + 2 (8, 14, 20, ...; n residual "
                        f"blocks per stage) (default: {DEFAULT_DEPTHS['resnet']}); vit: "
                        f"Transformer blocks (default: {DEFAULT_DEPTHS['vit']})")
    t.add_argument("--width", metavar="N", type=integer(1), default=None,
                   help=f"resnet: channels of the first stage; the next two have 2x and 4x "
                        f"(default: {d.width})")
    t.add_argument("--dim", metavar="N", type=integer(1), default=None,
                   help=f"vit: features per token (default: {d.dim})")
    t.add_argument("--heads", metavar="N", type=integer(1), default=None,
                   help=f"vit: attention heads, dividing --dim (default: {d.heads})")
    t.add_argument("--patch", metavar="P", type=integer(1), default=None,
                   help="vit: side of the square patches, dividing the image's height and "
                        "width (default: a quarter of the height, 4 x 4 patches)")
    t.add_argument("--pool", choices=VIT_POOLS, default=None,
                   help=f"vit: classify the mean of the tokens or a class token "
                        f"(default: {d.pool})")
    t.add_argument("--mlp-activation", choices=ACTIVATIONS, default=None,
                   help=f"vit: the activation inside each block's MLP "
                        f"(default: {d.mlp_activation})")
    t.add_argument("--weight-palette", metavar="LO,HI", type=palette, default=None,
                   help="the two weight bit widths, 1 <= LO <= HI <= 8 "
                        f"(default: {_pair(d.weight_palette)})")
    t.add_argument("--act-palette", metavar="LO,HI", type=palette, default=None,
                   help=f"the two activation bit widths (default: {_pair(d.act_palette)})")
    t.add_argument("--target-weight-bits", metavar="BITS", type=positive, default=None,
                   help="budget: mean bits per weight after snapping, within the weight "
                        f"palette (default: {d.target_weight_bits})")
    t.add_argument("--target-act-bits", metavar="BITS", type=positive, default=None,
                   help="budget: mean bits per activation, within the activation palette "
                        f"(default: {d.target_act_bits})")
    t.add_argument("--epochs-phase1", metavar="N", type=integer(0), default=None,
                   help=f"epochs of phase 1, noise injection (default: "
                        f"{per_dataset('epochs_phase1')})")
    t.add_argument("--epochs-phase2", metavar="N", type=integer(0), default=None,
                   help=f"epochs of phase 2, exact integer arithmetic (default: "
                        f"{per_dataset('epochs_phase2')})")
    t.add_argument("--seed", metavar="N", type=integer(0), default=None,
                   help=f"seed of every random choice (default: {d.seed})")
    t.add_argument("--batch-size", metavar="N", type=integer(1), default=None,
                   help=f"images per mini-batch (default: "
                        f"{per_dataset('batch_size')})")
    t.add_argument("--lr", metavar="RATE", type=positive, default=None,
                   help=f"Adam learning rate, cosine schedule per phase (default: "
                        f"{per_dataset('lr', '{:g}'.format)}); with --resume, the "
                        f"rate for the rest of the run")
    t.add_argument("--val-fraction", metavar="F", type=fraction, default=None,
                   help="hold out the last F of the training images as the validation set "
                        "that every epoch reports; the test set is evaluated once, at the "
                        f"end; 0: no validation set (default: {d.val_fraction:g})")
    t.add_argument("--threads", metavar="N", type=integer(1), default=None,
                   help="threads for training (BLAS and the work between its products); the "
                        "model file records it, and the same "
                        "seed and thread count reproduce a run byte for byte (default: "
                        "one per core)")
    t.add_argument("--fp32", action="store_true",
                   help="train the float32 baseline instead (default: off)")
    t.add_argument("--out", metavar="DIR", type=folder, default=None,
                   help="run folder, created if needed (default: runs/<dataset>)")
    t.add_argument("--force", action="store_true",
                   help="overwrite the run already in --out (default: refuse)")
    t.add_argument("--quiet", action="store_true",
                   help="nothing on stderr while training (default: the split and the "
                        "schedule, then a bar on a terminal, one line per epoch otherwise)")
    t.add_argument("--resume", metavar="DIR", type=folder, default=None,
                   help="continue the interrupted run in DIR from its last checkpoint; its "
                        "options come from the checkpoint (only --lr and --quiet may be "
                        "given) (default: none)")


def _model_parsers(sub) -> None:
    backends = ", ".join(BACKEND_NAMES)
    e = sub.add_parser("eval", help="accuracy of a .soniq model on a dataset's test split")
    e.add_argument("model_file", metavar="MODEL", help="a .soniq file")
    e.add_argument("--dataset", choices=DATASET_NAMES, default=None,
                   help="test data (default: the dataset the model was trained on)")
    e.add_argument("--data-dir", metavar="DIR", type=folder, default=None,
                   help="folder of the mnist/cifar10 files (default: the training run's)")
    e.add_argument("--backend", default="ref",
                   help=f"kernels: {backends} (default: ref)")
    e.add_argument("--json", action="store_true", help="print one JSON object (default: text)")

    i = sub.add_parser("info", help="layers, shapes, bits and size of a .soniq model")
    i.add_argument("model_file", metavar="MODEL", help="a .soniq file")
    i.add_argument("--json", action="store_true", help="print JSON (default: a table)")

    p = sub.add_parser("predict", help="classify image files with a .soniq model")
    p.add_argument("model_file", metavar="MODEL", help="a .soniq file")
    p.add_argument("images", metavar="IMAGE", nargs="+",
                   help="PNG, JPEG or .npy files; resized and converted to the model's "
                        "input shape (see docs/cli.md)")
    p.add_argument("--backend", default="ref", help=f"kernels: {backends} (default: ref)")
    p.add_argument("--top", metavar="K", type=integer(1), default=3,
                   help="how many most likely classes to print per image (default: 3)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object per image, with every class's "
                        "probability (default: text)")

    x = sub.add_parser("export", help="convert a .soniq model for another runtime")
    x.add_argument("model_file", metavar="MODEL", help="a .soniq file")
    x.add_argument("--onnx", metavar="OUT", type=folder, required=True,
                   help="write an ONNX graph (integer ops, opset 13) to OUT")


def _data_parser(sub) -> None:
    from ..data.sources import SOURCES

    d = sub.add_parser("data", help="fetch a dataset (mnist, fashion-mnist, cifar10)")
    actions = d.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser,
                               required=True)
    dl = actions.add_parser("download", help="download a dataset and check its SHA-256")
    dl.add_argument("name", metavar="NAME", choices=tuple(SOURCES),
                    help=f"one of {', '.join(SOURCES)}")
    dl.add_argument("--dir", metavar="DIR", type=folder, default=None,
                    help="where to put the files (default: the dataset cache, "
                         "$XDG_CACHE_HOME/soniq/datasets/NAME, where training finds them)")


def _sweep_parser(sub) -> None:
    from soniq_sweep import cli as sweep_cli       # its options; Ray loads only to run trials

    s = sub.add_parser("sweep", help="train a grid of configs (budgets, palettes, seeds) on "
                                     "Ray; results table and accuracy-bits frontier",
                       description="Run a grid of training configs as ordinary runs under "
                                   "SWEEP_DIR/trials/, on a local Ray instance, a Ray cluster "
                                   "or one after another here; write results.csv, "
                                   "results.json and frontier.png. A re-run skips finished "
                                   "trials and resumes interrupted ones.")
    sweep_cli.add_arguments(s)


def build_parser() -> argparse.ArgumentParser:
    """The ``soniq`` parser with its subcommands."""
    from .. import __version__

    parser = Parser(prog="soniq", description="Noise-injected mixed-precision training "
                                               "and exact integer inference.",
                    epilog="'soniq COMMAND --help' lists a command's options.")
    parser.add_argument("--version", action="version", version=f"soniq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _train_parser(sub)
    _model_parsers(sub)
    _data_parser(sub)
    _sweep_parser(sub)
    return parser
