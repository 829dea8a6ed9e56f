"""The run's pictures say what they show: bits.png gives every layer a full-height bar of
channel shares (a one-channel layer is as visible as a wide one), labels the layers the
same way in both panels and carries the mean bits; a float32 run's curves speak of no
bit budget."""

import numpy as np
import pytest

from soniq_ref import plots
from soniq_ref.train import EpochRecord, TrainConfig, train


@pytest.fixture()
def figures(monkeypatch):
    saved = []

    def keep(fig, path):
        saved.append(fig)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


@pytest.fixture(scope="module")
def deploy():
    return train(TrainConfig(epochs_phase1=1, epochs_phase2=1, limit_train=128,
                             channels=(3, 5))).deploy


def test_bits_plot_is_readable_at_a_glance(deploy, figures, tmp_path):
    plots.plot_bits(deploy, tmp_path / "bits.png", (1.97, 4.0))
    fig = figures[0]
    assert "mean 1.97 bits per weight, 4.00 per activation" in fig._suptitle.get_text()
    ax_w, ax_a = fig.axes
    labels = [[t.get_text() for t in ax.get_yticklabels()] for ax in (ax_w, ax_a)]
    assert labels[0] == labels[1] == ["L0 conv 1->3", "L1 conv 3->5", "L2 linear 20->10"]
    for ax in (ax_w, ax_a):
        ends = {}
        for bar in ax.patches:
            y = round(bar.get_y(), 6)
            ends[y] = max(ends.get(y, 0), bar.get_x() + bar.get_width())
        assert len(ends) == 3 and all(np.isclose(v, 100) for v in ends.values())
    first = [t.get_text() for t in ax_a.texts if t.get_text().endswith(" 1 ch")]
    assert first == ["8.00 bits, 1 ch"]


def test_float_curves_mention_no_bit_budget(figures, tmp_path):
    history = [EpochRecord("float", e, 1.0 / e, 50.0, 60.0, 32.0, 32.0) for e in (1, 2, 3)]
    plots.plot_curves(history, tmp_path / "curves.png")
    texts = [figures[0]._suptitle.get_text()] + [ax.get_ylabel() for ax in figures[0].axes]
    assert not any("bit" in t for t in texts) and "float32" in texts[0]
    quantized = [EpochRecord("noise", 1, 1.0, 50, 60, 2, 4), EpochRecord("exact", 2, 1, 50, 60,
                                                                          2, 4)]
    plots.plot_curves(quantized, tmp_path / "curves.png")
    assert "bit budget" in figures[1].axes[0].get_ylabel()
