"""The two pictures of a training run (matplotlib, Agg backend, no display needed).

``curves.png``  loss and accuracy (train and validation, %) per epoch; a dashed line
                marks the boundary between phase 1 (noise) and phase 2 (exact).
``bits.png``    per quantized layer, the share of its channels at each bit width, for
                weights (output channels) and activations (input channels or
                features); each bar is labelled with the layer's mean bits and
                channel count, the title with the run's mean bits.

Both are written atomically (temporary file in the same folder, then rename).
"""

from __future__ import annotations

import numpy as np

from .atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    try:
        with atomic_path(path) as tmp:
            # Fixed metadata keeps the bytes independent of the matplotlib version banner.
            fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    finally:
        fig.clf()


def plot_curves(history, path) -> None:
    """history: the trainer's EpochRecords (phase, epoch, loss, accuracies).

    A float32 run (phase 'float') has no bit budget and no phases: its loss is the
    plain cross-entropy and the title says so."""
    plt = _pyplot()
    epochs = [h.epoch for h in history]
    quantized = any(h.phase != "float" for h in history)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h.loss for h in history], marker=".", label="train loss")
    ax_acc.plot(epochs, [h.train_accuracy for h in history], marker=".", label="train")
    if any(np.isfinite(h.val_accuracy) for h in history):     # none without a validation set
        ax_acc.plot(epochs, [h.val_accuracy for h in history], marker=".", label="validation")
    boundary = [h.epoch for a, h in zip(history, history[1:]) if a.phase != h.phase]
    for ax in (ax_loss, ax_acc):
        for b in boundary:
            ax.axvline(b - 0.5, color="gray", linestyle="--", linewidth=1,
                       label="phase 1 | phase 2")
        ax.set_xlabel("epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_ylabel("loss (cross-entropy + bit budget in phase 1)" if quantized
                       else "loss (cross-entropy)")
    ax_acc.set_ylabel("accuracy (%)")
    fig.suptitle("training curves" if quantized else "training curves, float32 baseline")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _level_colour(level: int):
    """One fixed colour per bit width 1..8, the same in every panel and every run."""
    import matplotlib

    return matplotlib.colormaps["viridis"]((level - 1) / 7)


def _shares(ax, names, bit_arrays, title):
    """Per layer one bar of height 100%: the share of its channels at each bit width,
    so a layer of one channel is as visible as a layer of a thousand."""
    y = np.arange(len(names))[::-1]
    left = np.zeros(len(names))
    levels = sorted({int(b) for bits in bit_arrays for b in np.unique(bits)})
    for level in levels:
        share = np.array([100.0 * np.mean(bits == level) for bits in bit_arrays])
        ax.barh(y, share, left=left, color=_level_colour(level), label=f"{level}-bit",
                edgecolor="white")
        left += share
    for yi, bits in zip(y, bit_arrays):
        ax.text(101, yi, f"{np.mean(bits):.2f} bits, {len(bits)} ch", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 135)
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.3 * 3 / (len(names) + 2)),
              ncol=len(levels), frameon=False)


def plot_bits(deploy, path, mean_bits=None) -> None:
    """deploy: a DeployModel; one bar per quantized layer and panel, labelled the same
    way in both panels (``L<i> conv 1->32``). ``mean_bits`` = (weights, activations),
    the run's headline means, goes in the title."""
    plt = _pyplot()
    stages = deploy.quant_stages
    names = [f"L{i} {s.kind} {s.w_codes.shape[1]}->{s.w_codes.shape[0]}"
             for i, s in enumerate(stages)]
    fig, (ax_w, ax_a) = plt.subplots(1, 2, figsize=(11, 2.2 + 0.55 * len(stages)))
    _shares(ax_w, names, [s.w_bits for s in stages], "weights: % of output channels")
    _shares(ax_a, names, [s.a_bits for s in stages],
            "input activations: % of channels (L0 reads 8-bit pixels)")
    title = "learned precision per layer"
    if mean_bits is not None:
        title += f": mean {mean_bits[0]:.2f} bits per weight, {mean_bits[1]:.2f} per activation"
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
