"""A sweep's results: one row per trial in ``results.csv`` / ``results.json``, and
``frontier.png`` -- validation accuracy against mean weight bits and against mean
activation bits, mean and spread (min to max) over seeds, the float32 baseline,
and the Pareto frontier (no other point has fewer bits and higher accuracy). The
frontier is what one chooses a config on, so it is drawn on the validation sets, not
the test set; only a sweep whose trials hold out no validation set
(``val_fraction`` 0) falls back to test accuracy, and says so on the axis.

All three are rewritten atomically after every finished trial, from the trials'
own ``result.json`` files, so they always hold every finished trial exactly once.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

from soniq_ref.atomic import atomic_write_bytes

COLUMNS = ("id", "status", "reason", "dataset", "model", "fp32", "weight_palette",
           "act_palette", "target_weight_bits", "target_act_bits", "seed", "epochs_phase1",
           "epochs_phase2", "val_fraction", "mean_weight_bits", "mean_act_bits", "val_accuracy",
           "test_accuracy", "model_bytes",
           "compression_vs_fp32", "weight_compression", "train_seconds")
CONFIG_COLUMNS = ("dataset", "model", "fp32", "weight_palette", "act_palette",
                  "target_weight_bits", "target_act_bits", "seed", "epochs_phase1",
                  "epochs_phase2", "val_fraction")


def number(row: dict, key: str) -> float:
    """A row's accuracy as a float; NaN where it has none (null: no validation set)."""
    value = row.get(key)
    return float("nan") if value is None else float(value)


def flat_row(row: dict) -> dict:
    """A result row with its config's columns alongside (palettes as 'lo,hi')."""
    config = row.get("config", {})
    flat = {k: config.get(k) for k in CONFIG_COLUMNS}
    for key in ("weight_palette", "act_palette"):
        if flat[key] is not None:
            flat[key] = ",".join(str(v) for v in flat[key])
    flat.update({k: v for k, v in row.items() if k in COLUMNS and k not in CONFIG_COLUMNS})
    return flat


def _order(row: dict):
    c = row.get("config", {})
    return (bool(c.get("fp32")), c.get("weight_palette", []), c.get("act_palette", []),
            c.get("target_weight_bits", 0), c.get("target_act_bits", 0), c.get("seed", 0),
            row["id"])


def collect(sweep_dir, trials=None) -> list[dict]:
    """The result rows under ``sweep_dir`` (only those of ``trials`` when given)."""
    wanted = None if trials is None else {t.id for t in trials}
    rows = []
    for path in sorted(Path(sweep_dir).glob("trials/*/result.json")):
        try:
            row = json.loads(path.read_text())
        except (OSError, ValueError):
            continue                       # written atomically: only a foreign file fails
        if isinstance(row, dict) and "id" in row and (wanted is None or row["id"] in wanted):
            rows.append(row)
    return sorted(rows, key=_order)


def write_results(sweep_dir, rows: list[dict]) -> None:
    sweep_dir = Path(sweep_dir)
    flat = [flat_row(r) for r in rows]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    atomic_write_bytes(sweep_dir / "results.csv", text.getvalue().encode())
    atomic_write_bytes(sweep_dir / "results.json",
                       (json.dumps(flat, indent=1) + "\n").encode())
    plot_frontier(flat, sweep_dir / "frontier.png")


def groups(flat: list[dict]) -> list[dict]:
    """Finished quantized trials grouped by config less the seed: mean / min / max of
    test accuracy (``accuracy``), validation accuracy (``val_accuracy``) and bits over
    the seeds."""
    by_key = {}
    for r in flat:
        if r.get("status") != "done" or r.get("fp32"):
            continue
        key = (r["weight_palette"], r["act_palette"], r["target_weight_bits"], r["target_act_bits"])
        by_key.setdefault(key, []).append(r)
    out = []
    for (wp, ap, tw, ta), members in sorted(by_key.items()):
        acc = np.array([m["test_accuracy"] for m in members])
        val = np.array([number(m, "val_accuracy") for m in members])
        out.append(dict(weight_palette=wp, act_palette=ap, target_weight_bits=tw,
                        target_act_bits=ta, seeds=len(members), accuracy=acc.mean(),
                        accuracy_min=acc.min(), accuracy_max=acc.max(),
                        val_accuracy=val.mean(), val_accuracy_min=val.min(),
                        val_accuracy_max=val.max(),
                        weight_bits=float(np.mean([m["mean_weight_bits"] for m in members])),
                        act_bits=float(np.mean([m["mean_act_bits"] for m in members]))))
    return out


def chosen_on(flat: list[dict]) -> str:
    """The accuracy the frontier is drawn on: ``val_accuracy`` when every finished
    trial has one, else ``test_accuracy`` (trials without a validation set)."""
    done = [r for r in flat if r.get("status") == "done"]
    if all(np.isfinite(number(r, "val_accuracy")) for r in done):
        return "val_accuracy"
    return "test_accuracy"


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (bits, accuracy) no other point beats on both, by bits."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_frontier(flat: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    summary = groups(flat)
    key = chosen_on(flat)
    mean, low, high = ((key, key + "_min", key + "_max") if key == "val_accuracy" else
                       ("accuracy", "accuracy_min", "accuracy_max"))
    fp32 = [number(r, key) for r in flat if r.get("fp32") and r.get("status") == "done"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    palettes = sorted({(g["weight_palette"], g["act_palette"]) for g in summary})
    colors = {p: f"C{i}" for i, p in enumerate(palettes)}
    for ax, bits_key, label in ((axes[0], "weight_bits", "mean weight bits"),
                                (axes[1], "act_bits", "mean activation bits")):
        for g in summary:
            err = [[g[mean] - g[low]], [g[high] - g[mean]]]
            ax.errorbar(g[bits_key], g[mean], yerr=err, fmt="o", capsize=3,
                        color=colors[(g["weight_palette"], g["act_palette"])])
        points = [(g[bits_key], g[mean]) for g in summary]
        front = pareto(points)
        if front:
            ax.step([points[i][0] for i in front], [points[i][1] for i in front], where="post",
                    color="black", linewidth=1, label="Pareto frontier")
        if fp32:
            ax.axhline(np.mean(fp32), color="grey", linestyle="--",
                       label=f"float32 ({np.mean(fp32):.2f}%, {len(fp32)} seeds)")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(("validation accuracy (%)" if key == "val_accuracy" else
                        "test accuracy (%), no validation sets") +
                       "\nmean, min to max over seeds")
    for p in palettes:
        axes[1].plot([], [], "o", color=colors[p], label=f"W palette {p[0]}, A palette {p[1]}")
    handles, labels = axes[1].get_legend_handles_labels()
    rows = 1 + (len(labels) - 1) // 4
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8)
    n_done = sum(r.get("status") == "done" for r in flat)
    fig.suptitle(f"Accuracy against bits: {n_done} finished trials")
    fig.tight_layout(rect=(0, 0.06 * rows + 0.02, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
