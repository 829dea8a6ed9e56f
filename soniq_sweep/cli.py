"""``soniq sweep``: the command line of a sweep (registered by ``soniq_ref.cli``).

    soniq sweep --out SWEEP_DIR --target-weight-bits 1.5,2,3 --seeds 0,1,2 --fp32
    soniq sweep --out SWEEP_DIR --grid grid.json --address HOST:PORT
    soniq sweep --report SWEEP_DIR

Errors are raised as GridError / SweepError (ValueError / RuntimeError), which the
``soniq`` entry point prints as one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

GRID_OPTIONS = ("target_weight_bits", "target_act_bits", "weight_palette", "act_palette",
                "seeds", "fp32")
SCHEDULE_OPTIONS = ("epochs_phase1", "epochs_phase2", "batch_size", "lr", "val_fraction")


def _numbers(kind):
    def parse(text: str):
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s "
                                             f"like 1,2, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one value, got {text!r}")
        return values
    return parse


def add_arguments(parser) -> None:
    """The options of ``soniq sweep``, each with its default (as every ``soniq`` option)."""
    from soniq_ref.cli.parser import folder, fraction, integer, palette, per_dataset, positive
    from soniq_ref.data import DATASET_NAMES
    from soniq_ref.models import MODEL_NAMES
    from soniq_ref.train import TrainConfig

    d = TrainConfig()
    g = parser.add_argument_group("the grid (every combination, each with every seed)")
    g.add_argument("--target-weight-bits", type=_numbers(float), metavar="BITS[,BITS...]",
                   help=f"mean weight-bit budgets (default: {d.target_weight_bits:g})")
    g.add_argument("--target-act-bits", type=_numbers(float), metavar="BITS[,BITS...]",
                   help=f"mean activation-bit budgets (default: {d.target_act_bits:g})")
    g.add_argument("--weight-palette", type=palette, nargs="+", metavar="LO,HI",
                   help="weight palettes, e.g. 1,4 2,8 (default: %s,%s)" % d.weight_palette)
    g.add_argument("--act-palette", type=palette, nargs="+", metavar="LO,HI",
                   help="activation palettes (default: %s,%s)" % d.act_palette)
    g.add_argument("--seeds", type=_numbers(int), metavar="N[,N...]",
                   help="the seeds of every grid point (default: 0)")
    g.add_argument("--fp32", action="store_true",
                   help="add a float32 baseline per seed (default: off)")
    g.add_argument("--grid", metavar="FILE", default=None,
                   help="the trials from a JSON file instead of the grid options "
                        "(docs/sweeps.md gives its form) (default: none)")
    t = parser.add_argument_group("training options shared by every trial")
    t.add_argument("--dataset", choices=DATASET_NAMES, default=d.dataset,
                   help=f"training data (default: {d.dataset})")
    t.add_argument("--data-dir", metavar="DIR", type=folder, default=None,
                   help="the dataset's folder, the same on every machine (default: the "
                        "dataset cache; digits needs none)")
    t.add_argument("--model", choices=MODEL_NAMES, default=d.model,
                   help=f"network (default: {d.model})")
    t.add_argument("--epochs-phase1", metavar="N", type=integer(0), default=None,
                   help=f"epochs of phase 1 (default: "
                        f"{per_dataset('epochs_phase1')})")
    t.add_argument("--epochs-phase2", metavar="N", type=integer(0), default=None,
                   help=f"epochs of phase 2 (default: "
                        f"{per_dataset('epochs_phase2')})")
    t.add_argument("--batch-size", metavar="N", type=integer(1), default=None,
                   help=f"images per mini-batch (default: "
                        f"{per_dataset('batch_size')})")
    t.add_argument("--lr", metavar="RATE", type=positive, default=None,
                   help=f"Adam learning rate (default: "
                        f"{per_dataset('lr', '{:g}'.format)})")
    t.add_argument("--val-fraction", metavar="F", type=fraction, default=None,
                   help="the last F of the training images are each trial's validation "
                        "set, on which the frontier is drawn; the test set is scored once "
                        f"per trial; 0: none (default: {d.val_fraction:g})")
    r = parser.add_argument_group("where the trials run")
    r.add_argument("--out", metavar="DIR", type=folder, default=None,
                   help="the sweep folder; a re-run skips finished trials and resumes "
                        "interrupted ones (default: sweeps/<dataset>)")
    r.add_argument("--address", metavar="ADDR", default=None,
                   help="a Ray cluster: auto, HOST:PORT of 'ray start --head', or "
                        "ray://HOST:PORT (default: a local Ray instance on this machine)")
    r.add_argument("--cpus", metavar="N", type=integer(1), default=None,
                   help="trials at once on the local Ray instance (default: all cores)")
    r.add_argument("--local", action="store_true",
                   help="no Ray: run the trials one after another here (default: off)")
    r.add_argument("--report", metavar="DIR", type=folder, default=None,
                   help="only redraw results.csv, results.json and frontier.png of the "
                        "sweep in DIR (default: none)")


def _trials(args):
    from .grid import GridError, expand, load_grid_file

    if args.grid:
        given = [f"--{n.replace('_', '-')}" for n in GRID_OPTIONS if getattr(args, n)]
        if given:
            raise GridError(f"--grid cannot be combined with {', '.join(given)}; put them "
                            f"in the grid file")
        return load_grid_file(args.grid)
    base = dict(dataset=args.dataset, data_dir=args.data_dir, model=args.model)
    base.update({name: getattr(args, name) for name in SCHEDULE_OPTIONS
                 if getattr(args, name) is not None})      # the rest: the dataset's
    axes = {"target_weight_bits": args.target_weight_bits,
            "target_act_bits": args.target_act_bits,
            "weight_palette": args.weight_palette, "act_palette": args.act_palette}
    return expand(base, {k: v for k, v in axes.items() if v}, args.seeds or [0], args.fp32)


def summary_lines(rows) -> list[str]:
    """A markdown table: per grid point, validation and test accuracy, mean (min..max)
    over seeds, and bits."""
    from .results import flat_row, groups, number

    flat = [flat_row(r) for r in rows]
    lines = ["| W palette | A palette | W budget | A budget | seeds | validation accuracy % | "
             "test accuracy % | mean W bits | mean A bits |",
             "|---|---|---|---|---|---|---|---|---|"]
    spread = lambda g, key: (f"{g[key]:.2f} ({g[key + '_min']:.2f}.."
                             f"{g[key + '_max']:.2f})")
    for g in groups(flat):
        lines.append(f"| {g['weight_palette']} | {g['act_palette']} | "
                     f"{g['target_weight_bits']:g} | {g['target_act_bits']:g} | {g['seeds']} | "
                     f"{spread(g, 'val_accuracy')} | {spread(g, 'accuracy')} | "
                     f"{g['weight_bits']:.3f} | {g['act_bits']:.3f} |")
    done = [r for r in flat if r.get("fp32") and r.get("status") == "done"]
    if done:
        cells = []
        for key in ("val_accuracy", "test_accuracy"):
            acc = [number(r, key) for r in done]
            cells.append(f"{sum(acc) / len(acc):.2f} ({min(acc):.2f}..{max(acc):.2f})")
        lines.append(f"| float32 | | | | {len(done)} | {cells[0]} | {cells[1]} | 32 | 32 |")
    failed = [r for r in flat if r.get("status") != "done"]
    lines += [f"failed: {r['id']}: {r['reason']}" for r in failed]
    return lines


def run(args) -> None:
    from .results import collect, write_results
    from .runner import SweepError, run_sweep

    if args.report:
        folder = Path(args.report)
        rows = collect(folder)
        if not rows:
            raise SweepError(f"{folder} holds no finished trial (no trials/*/result.json)")
        write_results(folder, rows)
    else:
        trials, dropped = _trials(args)
        if dropped:
            print(f"sweep: {dropped} grid points skipped: their budget lies outside their "
                  f"palette")
        folder = Path(args.out) if args.out else Path("sweeps") / args.dataset
        rows = run_sweep(trials, folder, local=args.local, address=args.address, cpus=args.cpus)
    print("\n".join(summary_lines(rows)))
    print(f"wrote {folder / 'results.csv'}, results.json and frontier.png")
