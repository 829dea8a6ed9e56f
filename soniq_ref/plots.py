"""The two pictures of a training run (matplotlib, Agg backend, no display needed).

``curves.png``  loss and accuracy (train and test, %) per epoch; a dashed line
                marks the boundary between phase 1 (noise) and phase 2 (exact).
``bits.png``    per quantized layer, how many channels got each palette level,
                for weights (output channels) and activations (input channels or
                features); each bar is labelled with the layer's mean bits.

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
    """history: the trainer's EpochRecords (phase, epoch, loss, accuracies)."""
    plt = _pyplot()
    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h.loss for h in history], marker=".", label="train loss")
    ax_acc.plot(epochs, [h.train_accuracy for h in history], marker=".", label="train")
    ax_acc.plot(epochs, [h.test_accuracy for h in history], marker=".", label="test")
    boundary = [h.epoch for a, h in zip(history, history[1:]) if a.phase != h.phase]
    for ax in (ax_loss, ax_acc):
        for b in boundary:
            ax.axvline(b - 0.5, color="gray", linestyle="--", linewidth=1,
                       label="phase 1 | phase 2")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_loss.set_ylabel("loss (cross-entropy + bit budget in phase 1)")
    ax_acc.set_ylabel("accuracy (%)")
    fig.suptitle("training curves")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def _stacked(ax, names, bit_arrays, title):
    levels = sorted({int(b) for bits in bit_arrays for b in np.unique(bits)})
    x = np.arange(len(names))
    bottom = np.zeros(len(names))
    for level in levels:
        counts = np.array([np.count_nonzero(bits == level) for bits in bit_arrays], float)
        ax.bar(x, counts, bottom=bottom, label=f"{level}-bit")
        bottom += counts
    for xi, bits, top in zip(x, bit_arrays, bottom):
        ax.text(xi, top, f"mean {np.mean(bits):.2f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20, fontsize=8)
    ax.set_ylabel("channels")
    ax.set_title(title)
    ax.legend(fontsize=8)


def plot_bits(deploy, path) -> None:
    """deploy: a DeployModel; one bar per quantized layer and panel."""
    plt = _pyplot()
    stages = deploy.quant_stages
    names = [f"{i}: {s.kind} {s.w_codes.shape[0]}" for i, s in enumerate(stages)]
    fig, (ax_w, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    _stacked(ax_w, names, [s.w_bits for s in stages], "weight bits per output channel")
    _stacked(ax_a, names, [s.a_bits for s in stages],
             "input activation bits per channel (first layer: 8-bit pixels)")
    fig.suptitle("learned precision allocation")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
