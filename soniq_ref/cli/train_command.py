"""``soniq train``: a new run into a folder of its own, or ``--resume`` of an interrupted one.

A new run refuses a folder that already holds files unless ``--force`` (which
removes the previous run's outputs first). ``--resume DIR`` takes every option from
the checkpoint in DIR; only ``--lr`` (a lower rate after a divergence) and
``--quiet`` may be given with it. Either way, temporary files that a killed write
left in the folder are removed before training starts.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import fields
from pathlib import Path

from ..atomic import remove_temporaries
from ..train.config import TrainConfig
from .parser import UsageError

OUTPUT_NAMES = ("metrics.json", "model.soniq", "model_fp32.npz", "curves.png", "bits.png",
                "checkpoint.npz", "history.csv")
RESUME_OPTIONS = ("resume", "lr", "quiet")          # what --resume accepts
CONFIG_OPTIONS = ("dataset", "data_dir", "model", "weight_palette", "act_palette",
                  "target_weight_bits", "target_act_bits", "epochs_phase1", "epochs_phase2",
                  "seed", "val_fraction", "batch_size", "lr", "fp32", "threads", "depth",
                  "width", "dim", "heads", "patch", "pool", "mlp_activation")
VIT_OPTIONS = ("dim", "heads", "patch", "pool", "mlp_activation")   # only with --model vit


class Interrupted(Exception):
    """Ctrl-C during a training run; carries the run folder."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


def percent(accuracy: float) -> str:
    """An accuracy as every command prints it: ``98.89%`` (``--json`` gives every digit)."""
    return f"{accuracy:.2f}%"


def option(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def _check_budgets(config: TrainConfig) -> None:
    """A budget outside its palette's two levels cannot be met (below ``lo``) or does not
    constrain anything (above ``hi``): refuse it before training."""
    for name, palette in (("target_weight_bits", config.weight_palette),
                          ("target_act_bits", config.act_palette)):
        lo, hi = palette
        target = getattr(config, name)
        if math.isfinite(target) and not lo <= target <= hi:
            raise UsageError(f"argument {option(name)}: {target:g} is outside the palette's "
                             f"range {lo}..{hi}; choose a budget between the palette's two "
                             f"levels")


def _given(value) -> bool:
    """Whether an option was given (options default to None, flags to False)."""
    return value is not None and value is not False


def config_from_args(args) -> TrainConfig:
    """The run's TrainConfig: the options given, the dataset's defaults for the rest
    (:meth:`TrainConfig.for_dataset`)."""
    given = {k: getattr(args, k) for k in CONFIG_OPTIONS if _given(getattr(args, k))}
    vit_only = [k for k in VIT_OPTIONS if k in given]
    if vit_only and given.get("model") != "vit":
        raise UsageError(f"argument {option(vit_only[0])}: shapes a Vision Transformer; it "
                         f"needs --model vit")
    config = TrainConfig.for_dataset(given.pop("dataset", TrainConfig.dataset), **given)
    if not config.fp32:
        _check_budgets(config)
    try:
        return config.validate()
    except ValueError as exc:      # name options, not fields
        names = "|".join(f.name for f in fields(TrainConfig))
        raise UsageError(re.sub(rf"\b({names})\b", lambda m: option(m.group(1)),
                                str(exc))) from None


def _claim(out: Path, force: bool) -> None:
    """Make ``out`` this run's folder: refuse a previous run's unless ``force``."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} is a file, not a folder; choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise UsageError(f"argument --out: {out} already holds files (a previous run?); add "
                         f"--force to overwrite it, continue it with 'soniq train --resume "
                         f"{shlex.quote(str(out))}', or choose another --out")
    for name in OUTPUT_NAMES:
        (out / name).unlink(missing_ok=True)


def _resume_config(args) -> TrainConfig:
    """The checkpoint's config, with a new learning rate if ``--lr`` was given."""
    from ..train import checkpoint

    extra = [name for name, value in vars(args).items()
             if name not in RESUME_OPTIONS + ("command",) and _given(value)]
    if extra:
        raise UsageError(f"argument {option(extra[0])}: not allowed with --resume, which "
                         f"takes the run's options from its checkpoint; only --lr and --quiet "
                         f"may be given with it")
    saved = checkpoint.load(Path(args.resume))[1]["progress"]["config"]
    config = checkpoint.saved_config(saved)
    if args.lr is not None:
        config.lr = args.lr
    return config


def run_train(args) -> None:
    """``soniq train``; prints the summary line and where the outputs went."""
    from ..train import train
    from ..train.outputs import write_run

    if args.resume is not None:
        out, config = Path(args.resume), _resume_config(args)
    else:
        config = config_from_args(args)
        out = Path(args.out) if args.out is not None else Path("runs") / config.dataset
        _claim(out, args.force)
    out.mkdir(parents=True, exist_ok=True)          # a folder that cannot be made fails now
    remove_temporaries(out, OUTPUT_NAMES)
    try:
        result = train(config, progress=not args.quiet, run_dir=out,
                       resume=args.resume is not None)
        metrics = write_run(result, out)
    except KeyboardInterrupt:
        raise Interrupted(out) from None
    validation = "no validation set" if metrics["val_accuracy"] is None else \
        f"validation {percent(metrics['val_accuracy'])}"
    print(f"test accuracy {percent(metrics['test_accuracy'])}  {validation}  mean bits w "
          f"{metrics['mean_weight_bits']:.3f} a {metrics['mean_act_bits']:.3f}  model "
          f"{metrics['model_bytes']} bytes ({metrics['compression_vs_fp32']:.2f}x vs float32)"
          f"  {metrics['train_seconds']:.1f} s", flush=True)
    print(f"wrote {out / 'metrics.json'}", flush=True)


def interrupted_message(exc: Interrupted) -> str:
    """What Ctrl-C during a run says: how to continue it, if anything was saved."""
    from ..train import checkpoint

    if (exc.run_dir / checkpoint.FILE_NAME).is_file():
        return (f"interrupted; 'soniq train --resume {shlex.quote(str(exc.run_dir))}' "
                f"continues from the last complete epoch")
    return "interrupted before the first epoch completed, so there is nothing to resume"
