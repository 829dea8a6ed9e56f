"""Progress while training: on a terminal a bar that advances per mini-batch and labels
its numbers; elsewhere one plain line per epoch; nothing with progress off."""

import io

from soniq_ref.train import EpochRecord
from soniq_ref.train.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def record(epoch, phase="noise"):
    return EpochRecord(phase, epoch, 0.5, 90.0, 85.0, 2.5, 4.5)


def test_terminal_bar_advances_per_batch_with_labels():
    stream = Terminal()
    progress = Progress(True, 2, stream=stream)
    progress.start(total_steps=8, done_steps=0)
    for step in range(4):
        progress.batch("noise", 1, 1.0 / (step + 1))
    progress.epoch(record(1))
    for _ in range(4):
        progress.batch("exact", 2, 0.1)
    progress.close()
    text = stream.getvalue()
    assert "100%" in text and "left" in text
    assert "phase 2 epoch 2/2" in text       # (redraws are rate-limited: the last one)
    assert "loss 0.100" in text and "train 90.0%" in text and "val 85.0%" in text
    assert "bits w2.50 a4.50" in text
    assert max(len(line) for line in text.replace("\r", "\n").splitlines()) <= 100


def test_plain_lines_when_not_a_terminal():
    stream = io.StringIO()
    progress = Progress(True, 2, stream=stream)
    progress.start(total_steps=8, done_steps=0)
    progress.batch("noise", 1, 0.3)
    progress.epoch(record(1))
    progress.epoch(record(2, "exact"))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 2
    assert lines[0].startswith("phase 1 epoch 1/2: loss 0.500  train acc 90.00%  "
                               "val acc 85.00%  bits w 2.50 a 4.50")
    assert lines[1].startswith("phase 2 epoch 2/2:")


def test_quiet_prints_nothing():
    stream = Terminal()
    progress = Progress(False, 1, stream=stream)
    progress.start(4, 0)
    progress.batch("noise", 1, 0.3)
    progress.epoch(record(1))
    progress.close()
    assert stream.getvalue() == ""


def test_the_run_header_names_the_split_and_the_schedule():
    import numpy as np

    from soniq_ref.data import Dataset, hold_out_validation
    from soniq_ref.train import TrainConfig
    from soniq_ref.train.progress import run_header

    images = np.zeros((100, 1, 2, 2), np.uint8)
    labels = np.zeros(100, np.int64)
    data = Dataset("toy", images, labels, images[:30], labels[:30], 2)
    config = TrainConfig(epochs_phase1=4, epochs_phase2=2, batch_size=16, lr=0.01)
    assert run_header(config, hold_out_validation(data, 0.1)) == (
        "toy: 90 training, 10 validation (the last 10%), 30 test images; epochs 4 + 2, "
        "batch 16, lr 0.01")
    none = run_header(TrainConfig(fp32=True, val_fraction=0.0), hold_out_validation(data, 0))
    assert none.startswith("toy: 100 training, 30 test images, no validation set (val "
                           "fraction 0") and "fp32, epochs 45, batch 64, lr 0.003" in none
    stream = io.StringIO()
    Progress(True, 1, stream=stream).note("header")
    Progress(False, 1, stream=stream).note("quiet")
    assert stream.getvalue() == "header\n"


def test_an_epoch_without_a_validation_set_says_n_a():
    stream = io.StringIO()
    progress = Progress(True, 1, stream=stream)
    progress.epoch(EpochRecord("float", 1, 0.5, 90.0, float("nan"), 32.0, 32.0))
    assert "train acc 90.00%  val acc n/a  bits" in stream.getvalue()
